"""Experiment tracking (MLflow) and plots."""
