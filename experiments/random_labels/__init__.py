"""HW1-3 Generalization: can a network fit random labels."""
