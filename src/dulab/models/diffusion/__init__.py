"""diffusion models."""
