"""The one way in and out of the object store (S3 via the MinIO SDK)."""
