"""The benchmark suite: `python -m bench` (see bench/run.py). Benchmarks report; they never fail a run."""
