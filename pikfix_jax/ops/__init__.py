"""Differentiable image and histogram ops."""
