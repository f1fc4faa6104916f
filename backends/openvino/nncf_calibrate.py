"""NNCF post-training quantization: the backend's own INT8 calibrator (`--option calibrator=nncf`).

NNCF quantizes the FP32 OpenVINO model directly (FakeQuantize placement tuned to the CPU plugin's
fusions, plus fast bias correction), and with an accuracy budget it reverts the most harmful layers to
FP32 one by one (`quantize_with_accuracy_control`) until the labelled validation top-1 is within
`max_drop` points of FP32.
"""
from __future__ import annotations

import contextlib
import sys
import time

import numpy as np

from edgec.core.errors import InputError


def _count_fq(ov_model) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())


def quantize(fp32_ov_model, calibration, validation=None, max_drop: float | None = None,
             subset_size: int | None = None, progress=lambda msg: None):
    """Return (quantized ov.Model, report dict).

    `max_drop` is in top-1 points (0.5 = half a percent), the unit of edgec's --max-drop; NNCF's own
    unit is the metric's, and the metric here is top-1 in [0, 1].
    """
    import nncf

    if calibration is None or len(calibration) == 0:
        raise InputError("calibrator=nncf needs calibration data; pass --calib")
    n = int(subset_size or len(calibration))
    calib = nncf.Dataset(calibration, lambda s: s.feeds)
    report = {"calibrator": f"nncf {nncf.__version__}", "subset_size": n}
    t0 = time.perf_counter()
    # NNCF draws its progress bars on stdout; `edgec compile --json` owns stdout.
    with contextlib.redirect_stdout(sys.stderr):
        q = _run(nncf, fp32_ov_model, calib, validation, max_drop, n, progress, report)
    report["fake_quantize_nodes"] = _count_fq(q)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return q, report


def _run(nncf, fp32_ov_model, calib, validation, max_drop, n, progress, report):
    if max_drop is None:
        progress(f"NNCF post-training quantization on {n} samples")
        q = nncf.quantize(fp32_ov_model, calib, subset_size=n)
    else:
        if validation is None or not validation.has_labels:
            raise InputError("calibrator=nncf with --max-drop needs labelled validation data "
                             "(an npz with a 'labels' key or an image folder per class); pass --val")
        progress(f"NNCF quantization with accuracy control (max drop {max_drop} top-1 points)")
        q = nncf.quantize_with_accuracy_control(
            fp32_ov_model, calib, nncf.Dataset(validation), validation_fn=_top1,
            max_drop=float(max_drop) / 100.0, drop_type=nncf.DropType.ABSOLUTE, subset_size=n)
        report["max_drop_top1_points"] = float(max_drop)
        report["validation_samples"] = len(validation)
    return q


def _top1(compiled_model, samples):
    """NNCF's validation_fn: (top-1 accuracy, per-sample hits) so it can rank layers by harm."""
    out = compiled_model.outputs[0]
    hits = []
    for s in samples:
        logits = compiled_model(s.feeds)[out]
        hits.append(float(int(np.argmax(logits.reshape(-1))) == int(s.label)))
    return float(np.mean(hits)) if hits else 0.0, hits
