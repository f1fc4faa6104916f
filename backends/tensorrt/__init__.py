"""TensorRT backend (standard TensorRT or TensorRT-RTX): explicit-quantization ONNX -> engine (model.plan)."""
