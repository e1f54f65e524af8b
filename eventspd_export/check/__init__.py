"""Numerical checks of exported graphs and engines against PyTorch."""
