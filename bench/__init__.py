"""Benchmarks, run from the repository root as modules: ``python -m bench.lecture_bench``,
``python -m bench.sweep_bench`` (see bench/README.md)."""
