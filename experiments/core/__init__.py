"""Core measures free of the experiment modules: the Hessian spectrum (`curvature`)."""
