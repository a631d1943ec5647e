"""HW1-3 Flatness vs generalization, part 1: the line between two trained models."""
