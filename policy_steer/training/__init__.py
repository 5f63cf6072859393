"""Training the reference policies with lerobot's own training code."""
