"""HW1-3 Generalization: number of parameters vs generalization."""
