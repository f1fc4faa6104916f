"""The compile stage: compression after the optimizer, before quantization (one call in compiler.py)."""
from __future__ import annotations

from typing import Sequence

import onnx

from .pipeline import CompressResult, Step, compress


def compression_stage(model: onnx.ModelProto, steps: Sequence[Step] | None, *, calibration, validation,
                      max_drop: float | None, per_channel: bool, say, qmax: int = 127) -> tuple[onnx.ModelProto, CompressResult | None]:
    """(model, result); the model untouched and None when no step is asked for."""
    if not steps:
        return model, None
    # JSON-shaped steps ({"technique": "prune", "amount": 0.5}) from the API or a compare variant
    steps = [s if isinstance(s, Step) else Step(**{**s, "layers": tuple(s.get("layers") or ())}) for s in steps]
    say("compressing weights: " + ", ".join(f"{s.technique} {s.amount:g}" for s in steps))
    res = compress(model, steps, calibration=calibration, validation=validation, max_drop=max_drop,
                    per_channel=per_channel, progress=say, qmax=qmax)
    return res.model, res
