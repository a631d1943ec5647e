"""Training dynamics: batch size."""
