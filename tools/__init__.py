"""Developer commands that are not part of the installed package (run from a clone)."""
