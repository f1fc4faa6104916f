"""Compression in the core: unstructured pruning, weight clustering, entropy-coded size, packing.

Backend-neutral like the optimizer and quantization: every technique rewrites the ONNX weights, so
every backend gets it. One module per technique, one entry in pipeline.TECHNIQUES each:
  prune.py      magnitude pruning (per layer, or one global threshold), exact sparsity
  sparsegpt.py  one-shot second-order pruning with weight reconstruction (SparseGPT; quantization's H)
  cluster.py    k-means weight sharing on the INT8 grid (<= N integers per layer after quantization)
Around them:
  layers.py     the [Cout, K] view of every layer, layer selection, H collection
  pipeline.py   compress(): the step list, the report, --max-drop per-layer selection
  enforce.py    masks and levels re-applied after quantization (compile's INT8)
  entropy.py    raw / zstd / Huffman / ANS bytes and bits per weight (inspect, manifests)
  pack.py       `edgec pack` / `unpack`: an entropy-coded, hash-checked artifact archive
  stage.py      the compile stage (after the optimizer, before quantization)
  command.py    the CLI verbs compress / pack / unpack and compile's flags

What it buys: storage (flash, OTA payload), not latency. onnxruntime, OpenVINO, TVM and TFLite CPU
kernels run a 70 %-sparse or 16-level layer as a dense one (benchmarks/bench_compression.py
measures it); the saving is in the entropy-coded bytes.
"""
from .entropy import size_report, size_section
from .pipeline import TECHNIQUES, CompressResult, Step, compress

__all__ = ["compress", "Step", "CompressResult", "TECHNIQUES", "size_report", "size_section"]
