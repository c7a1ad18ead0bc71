"""Flax modules of Pik-Fix."""
