"""PyTorch encoders, frontends and checkpoint converters (the `export` extra: needs torch)."""
