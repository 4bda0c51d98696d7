"""Checkpoint loaders: each reads one published format and returns an ExportableModel."""
