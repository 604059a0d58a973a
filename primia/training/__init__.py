"""Local training and evaluation loops, and classification metrics."""
