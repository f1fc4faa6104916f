"""The reference backend: the optimized (and quantized) ONNX model itself, run by ONNX Runtime."""
