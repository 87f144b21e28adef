"""Hydra plugin that puts bulkinfer config packages (``bulkinfer.configs``) on the search path."""
