"""semisup models."""
