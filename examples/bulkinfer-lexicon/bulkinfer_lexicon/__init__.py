"""Lexicon sentiment, a bulkinfer predictor plugin (see predictor.py)."""
