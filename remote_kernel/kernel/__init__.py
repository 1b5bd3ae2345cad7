"""The Jupyter face of remote_kernel: the kernel, its magics, outputs and embedded pool."""
