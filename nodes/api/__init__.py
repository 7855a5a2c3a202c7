"""nodes/api."""
