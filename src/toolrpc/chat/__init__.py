"""Chat layer."""
