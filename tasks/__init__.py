"""Thin Prefect tasks: take references, call the core (primia/), store, return references."""
