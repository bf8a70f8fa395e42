"""Experiments reproducing the paper's tables at small scale (each runs with ``python -m``)."""
