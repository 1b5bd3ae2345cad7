"""remote_kernel: a Jupyter kernel whose cells run in an isolated remote session."""

__version__ = "0.1.0"
