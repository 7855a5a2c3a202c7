"""Security regression tests: each reproduces an attack and shows it no longer gets through."""
