"""Local stack (SeaweedFS S3, Prefect server, MLflow server) and production compose files."""
