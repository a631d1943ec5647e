"""HW1-2 Optimization: the gradient norm and the loss at every iteration."""
