"""Synthetic datasets written in the real datasets' on-disk layouts."""
