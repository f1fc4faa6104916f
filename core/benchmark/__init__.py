"""`edgec benchmark` / `edgec.benchmark`: latency percentiles with their noise, throughput over parallel
streams, and memory (peak RSS of a fresh process, size on disk) of artifacts on their own runtimes.

stats.py   percentiles and the batch-medians confidence interval
timing.py  the interleaved round-robin loop (also behind `edgec compare`) and parallel streams
memory.py  child-process peak-RSS measurement
api.py     `benchmark()`; command.py the CLI verb
"""
from edgec.core.benchmark.api import BenchmarkReport, benchmark

__all__ = ["benchmark", "BenchmarkReport"]
