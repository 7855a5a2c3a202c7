"""Benchmarks of cronmesh against the numbers in the project goals (``python -m bench.run``)."""
