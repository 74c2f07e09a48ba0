"""sparsec: a sparse deep-learning compiler and sparse-accelerator simulator."""

__version__ = "0.1.0"
