"""primia: privacy-preserving federated learning for medical imaging (core library, no Prefect)."""

__version__ = "0.1.0"
