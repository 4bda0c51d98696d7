"""Turning trained encoders into model bundles (needs the `export` extra: torch, transformers)."""
