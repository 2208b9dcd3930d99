"""ε-networks."""
