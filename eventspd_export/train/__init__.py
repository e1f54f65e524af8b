"""The seed's training loop."""
