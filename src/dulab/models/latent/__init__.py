"""latent models."""
