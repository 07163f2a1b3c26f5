"""Attention mass, VAS, attention-guided losses and the training-free intervention."""
