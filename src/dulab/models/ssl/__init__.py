"""ssl models."""
