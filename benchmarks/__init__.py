"""stfuse benchmarks: `make bench` (python -m benchmarks.run [name ...])."""
