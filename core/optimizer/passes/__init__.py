"""Built-in optimizer passes, one module per pass; importing a module registers its pass."""
from edgec.core.optimizer.passes import (  # noqa: F401
    constant_folding,
    cse,
    dead_code,
    fold_batchnorm,
    fold_mul_add,
    fold_pad,
    fusion_annotation,
    matmul_add_to_gemm,
    noop_removal,
    normalize,
    shape_inference,
    version_conversion,
)
