"""`edgec debug` and the precision audit: which layer breaks accuracy, and what really ran in INT8.

The algorithms live here, backend-neutral (NNCF's split); what only a runtime knows comes from two
optional backend hooks (core/backend.py): `intermediates` (a Runner that also returns chosen tensors
of the ONNX graph) and `audit` (per compute layer, the precision the runtime executes).

  layers.py   the FP32 graph: which tensors to compare, their producers, each tensor's segment
  compare.py  FP32 vs artifact per tensor: cosine, NMSE/SQNR, max error, and the error it ADDS
  bisect.py   the shortest prefix of the worst tensors (--float-tensors) or layers (--keep-fp32) to keep
              in float that meets a demand, each candidate compiled and measured on the backend's runtime
  audit.py    the audit rows -> "87 of 92 conv/gemm layers run INT8; 5 float: <names> (why)"
  report.py   JSON + a static HTML page (inline SVG, no script) with the per-layer error along the graph
  command.py  the `debug` verb and `inspect ARTIFACT`
"""
