"""Benchmarks: medians over repeats, reported next to a baseline measured in the same run."""
