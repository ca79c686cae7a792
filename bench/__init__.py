"""Benchmarks and data tools for the sidecar; run them with `python -m bench.NAME`."""
