"""Compression in the core: unstructured pruning, weight clustering, entropy-coded size, packing.

Backend-neutral like the optimizer and quantization: every technique rewrites the ONNX weights, so
every backend gets it. One module per technique, one entry in pipeline.TECHNIQUES each:
  prune.py      magnitude pruning (per layer, or one global threshold), exact sparsity
  sparsegpt.py  one-shot second-order pruning with weight reconstruction (SparseGPT; quantization's H)
  cluster.py    k-means weight sharing on the INT8 grid (<= N integers per layer after quantization)
Structured steps (structured.py, run before the weight steps; they cut MACs, so they buy speed):
  channels.py / reconstruct.py  channel groups, channel removal, least-squares re-fit of consumers
  lowrank.py    data-aware SVD of Gemm / 1x1 Conv;  distill.py  KD fine-tuning (torch, onnx2torch)
Around them:
  layers.py     the [Cout, K] view of every layer, layer selection, H collection
  pipeline.py   compress(): the step list, the report, --max-drop per-layer selection
  enforce.py    masks and levels re-applied after quantization (compile's INT8)
  entropy.py    raw / zstd / Huffman / ANS bytes and bits per weight (inspect, manifests)
  pack.py       `edgec pack` / `unpack`: an entropy-coded, hash-checked artifact archive
  stage.py      the compile stage (after the optimizer, before quantization)
  command.py    the CLI verbs compress / pack / unpack and compile's flags

Measured (benchmarks/bench_compression.py, INT8 weights, ANS-coded size vs FP32 weights, top-1 drop
+- paired SE on imagenet_eval500 / 3000 Fashion-MNIST test images, layer statistics from calib500[:32]):
EfficientNet-Lite0 int8 alone 4.23x +0.4+-0.6, 32 levels 6.69x +1.8+-0.8, 16 levels 7.96x +3.4+-1.1,
50 % SparseGPT 6.30x +24; SqueezeNet 1.1 32 levels 7.02x +0.8+-1.0, 30 % SparseGPT 5.13x +3.8+-1.2;
Fashion-MNIST CNN 50 % + 16 levels 10.6x +0.7+-0.2. One-shot unstructured pruning of these compact
ImageNet nets costs far more than sharing values does; without fine-tuning, clustering is the lever.

What it buys: storage (flash, OTA payload), not latency. onnxruntime, OpenVINO, TVM and TFLite CPU
kernels run a 70 %-sparse or 16-level layer as a dense one (benchmarks/bench_compression.py
measures it); the saving is in the entropy-coded bytes.
"""
from edgec.core.lazy import exports

__getattr__, __dir__ = exports(globals(), {  # imported on first use: the CLI verbs live in this package
    "size_report": "edgec.core.compression.entropy", "size_section": "edgec.core.compression.entropy",
    "TECHNIQUES": "edgec.core.compression.pipeline", "CompressResult": "edgec.core.compression.pipeline",
    "Step": "edgec.core.compression.pipeline", "compress": "edgec.core.compression.pipeline"})

__all__ = ["compress", "Step", "CompressResult", "TECHNIQUES", "size_report", "size_section"]
