"""Measurements of the papers behind tfnorm, on its hand-written gradients."""
