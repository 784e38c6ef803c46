"""Benchmarks and soaks that print figures; run them as modules (``python -m bench.soak``)."""
