"""Qualcomm backends: `qnn` (HTP context binaries through onnxruntime-qnn) and `snpe` (the SNPE/QAIRT SDK's tools)."""
