"""Training dynamics: early stopping."""
