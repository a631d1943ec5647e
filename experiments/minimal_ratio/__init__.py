"""HW1-2 Optimization: what happens when the gradient is almost zero."""
