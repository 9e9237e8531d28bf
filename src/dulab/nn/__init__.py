"""Layers only (no probability): masked, gated, residual, attention, U-Net building blocks."""
