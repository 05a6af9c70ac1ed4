"""Orion's benchmark suite: benchmarks/run_suite.py, benchmarks/NOTES.md."""
