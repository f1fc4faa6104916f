"""Compression in the core: unstructured pruning, weight clustering, entropy-coded size, packing.

Backend-neutral like the optimizer and quantization: every technique rewrites the ONNX weights, so
every backend gets it. One module per technique, one entry in pipeline.TECHNIQUES each:
  prune.py      magnitude pruning (per layer, or one global threshold), exact sparsity
  sparsegpt.py  one-shot second-order pruning with weight reconstruction (SparseGPT; quantization's H)
  cluster.py    k-means weight sharing on the INT8 grid (<= N integers per layer after quantization)
  ecq.py        entropy-constrained quantization on the INT8 grid: one rate-distortion slope, each layer
                weighted by its measured output sensitivity (level spacing and zeros per layer)
Structured steps (structured.py, run before the weight steps; they cut MACs, so they buy speed):
  channels.py / reconstruct.py  channel groups, channel removal, least-squares re-fit of consumers
  lowrank.py    data-aware SVD of Gemm / 1x1 Conv;  distill.py  KD fine-tuning (torch, onnx2torch)
After the weight steps:
  codes.py      `--finetune distill` after --ecq/--cluster: KD with each layer's integer codes frozen
                (scales, biases, uncompressed layers train; coded size unchanged) or trained straight-through
                on the layer's own levels (--finetune-codes ste; size re-measured)
Around them:
  layers.py     the [Cout, K] view of every layer, layer selection, H collection
  pipeline.py   compress(): the step list, the report, --max-drop per-layer selection
  enforce.py    masks and levels re-applied after quantization (compile's INT8)
  entropy.py    raw / zstd / Huffman / ANS bytes and bits per weight (inspect, manifests)
  pack.py       `edgec pack` / `unpack`: an entropy-coded, hash-checked artifact archive
  stage.py      the compile stage (after the optimizer, before quantization)
  command.py    the CLI verbs compress / pack / unpack and compile's flags

Measured (benchmarks/bench_compression.py, weight-only INT8 of the compressed model, ANS-coded size vs
FP32 weights, top-1 drop +- paired SE; H from calib500[:64] (+[64:200] for layers with few input rows),
sensitivities from calib500[:32], measured on imagenet_eval500 / Fashion-MNIST test[1000:4000]):
  Fashion-MNIST CNN  int8 4.11x -0.23+-0.09; ecq 3e-8 11.5x +0.27+-0.19, 1e-7 15.0x +0.70+-0.22;
                     cluster 16 8.19x -0.07+-0.16; prune 0.5 + cluster 16 10.5x +0.57+-0.24
  EfficientNet-Lite0 int8 4.23x +0.40+-0.63; ecq 1e-9 5.42x +0.20+-0.45, 3e-9 6.24x +0.20+-0.53,
                     1e-8 7.45x +2.20+-0.82
                     (last session's best, 32 k-means levels with H from 32 images: 6.69x +1.8+-0.8);
                     ecq 3e-9 on the 7-bit grid compiled to full INT8 on onnxruntime: 6.00x weights,
                     -0.20+-0.45 top-1, 98.6 % agreement, pack 6.20x the FP32 ONNX, byte-identical
  SqueezeNet 1.1     int8 4.28x +0.40+-0.28; ecq 1e-9 6.46x -0.60+-0.72, 3e-9 7.73x -0.60+-1.00,
                     1e-8 9.81x +2.40+-1.29; same H: cluster 32 7.02x -0.40+-0.69, cluster 16 8.50x
                     +3.80+-1.36, SparseGPT 0.3 5.13x +2.60+-1.11
Short of 10x at <= 1 point on EfficientNet-Lite0: 500 images and no training; fine-tuning (#19) is the lever.
Fine-tuning with frozen codes (7-bit grid, 450 calib images, 50 held out) moved it little: ecq 1e-8 7.53x
+2.60+-0.82 -> +2.20+-0.77 after 5 epochs (held-out KL 0.041 -> 0.037; ste codes, 3 epochs: +2.40+-0.79);
ecq 5e-9 + 4 epochs compiled to INT8: onnxruntime 6.38x +1.00+-0.60, OpenVINO 6.43x +0.40+-0.49, pack 6.6x.
The lever without fine-tuning was the statistics, not the technique: the classifier's H from 32 images
is rank 32 for 1280 inputs, and every data-aware method (SparseGPT, clustering, ECQ) fitted it to those
images (logit NMSE 0.97 at ecq 1e-8 on held-out images; 0.055 with more images and a shrunk H).

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
