"""Training dynamics: learning rate."""
