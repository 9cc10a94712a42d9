"""Benchmarks of the detection ensembles: NVIDIA's perf_analyzer against the real server."""
