"""Generated image corpora (see images.py)."""
