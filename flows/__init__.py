"""Prefect flows: the table of contents of each job. No maths here."""
