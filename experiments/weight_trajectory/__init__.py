"""HW1-2 Optimization: the path of the weights during training, in 2-D."""
