"""edgeai-repro: one-command reproductions of three edge-AI papers."""

__version__ = "0.1.0"
