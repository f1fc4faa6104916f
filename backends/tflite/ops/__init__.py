"""One module per op family; importing them fills `lower.HANDLERS`."""
from . import conv, elementwise, gemm, pool, qdq, resize, shape  # noqa: F401
