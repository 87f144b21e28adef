"""Lexicon sentiment written against bulkinfer's oldest supported plugin contract (1.0)."""
