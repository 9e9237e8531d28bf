"""gan models."""
