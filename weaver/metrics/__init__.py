"""Corpus-level text metrics computed with the reference implementations."""
