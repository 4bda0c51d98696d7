"""Building blocks shared by the encoders: one per file."""
