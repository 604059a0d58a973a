"""The MLflow model registry as the sign-off desk: the released model (a pyfunc), its privacy model
card, and promotion to `champion` behind quality, privacy and audit gates."""
