"""Exportable audio frontends (waveform in, features out)."""
