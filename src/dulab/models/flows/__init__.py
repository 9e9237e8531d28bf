"""flows models."""
