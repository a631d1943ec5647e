"""Training dynamics: weight initialization."""
