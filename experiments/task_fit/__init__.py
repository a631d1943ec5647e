"""HW1-1 Deep vs shallow: train on an actual task."""
