"""OpenVINO backend: core-optimized ONNX -> OpenVINO IR (model.xml + model.bin) for CPU/GPU/NPU/AUTO.

Importing this package does not import openvino; `plugin.py` is what the `edgec.backends` entry point loads.
"""
