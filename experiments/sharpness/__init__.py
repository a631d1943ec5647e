"""HW1-3 Flatness vs generalization: sharpness vs batch size."""
