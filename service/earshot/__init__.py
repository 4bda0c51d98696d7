"""earshot: audio embeddings and tags over HTTP."""

__version__ = "0.1.0"
