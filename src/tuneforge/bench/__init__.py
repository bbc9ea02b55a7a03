"""Benchmark harnesses (speed, memory, method comparison). `tuneforge bench methods`: see bench/methods.py."""
