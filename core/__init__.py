"""The backend-agnostic core: ONNX IR handling, optimization passes, quantization, data, validation.

Nothing in here imports a backend; backends are found through `edgec.core.registry`.
"""
