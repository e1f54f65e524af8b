"""Held-out depth accuracy: metrics and the evaluate command's work."""
