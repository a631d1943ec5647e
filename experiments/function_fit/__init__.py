"""HW1-1 Deep vs shallow: simulate a function."""
