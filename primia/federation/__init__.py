"""Federated learning core: aggregation strategies and the hospital/coordinator round logic."""
