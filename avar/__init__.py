"""avar: attention-guided cold-start for multimodal reasoning."""

__version__ = "0.1.0"
