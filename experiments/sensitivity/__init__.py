"""HW1-3 Flatness vs generalization, part 2: sensitivity vs batch size."""
