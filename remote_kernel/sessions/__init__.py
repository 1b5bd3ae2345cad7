"""The client of the dynamic-sessions REST contract. Knows nothing of Jupyter."""
