"""The result cache: exact repeats answered from stored images (see cache.py)."""
