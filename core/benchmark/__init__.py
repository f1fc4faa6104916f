"""`edgec benchmark` / `edgec.benchmark`: latency percentiles with their noise, throughput over parallel
streams, and memory (peak RSS of a fresh process, size on disk) of artifacts on their own runtimes.

stats.py   percentiles and the batch-medians confidence interval
timing.py  the interleaved round-robin loop (also behind `edgec compare`) and parallel streams
memory.py  child-process peak-RSS measurement
api.py     `benchmark()`; command.py the CLI verb
"""
from edgec.core.lazy import exports

__getattr__, __dir__ = exports(globals(), {  # imported on first use: the CLI verb lives in this package
    "benchmark": "edgec.core.benchmark.api", "BenchmarkReport": "edgec.core.benchmark.api"})

__all__ = ["benchmark", "BenchmarkReport"]
