"""Validation runs the reference and the artifact in turns per chunk of samples (core/validate.py,
issue 17): the report must be what per-sample turns give, for any chunk size."""
from __future__ import annotations

import numpy as np
import onnx

from edgec.core import validate
from edgec.core.data import ArrayDataset
from edgec.core.validate import ReferenceRunner, validate_runner


class _Noisy(ReferenceRunner):
    """The FP32 model plus a per-call perturbation that depends on the input, so a mix-up of which
    output belongs to which sample changes the report."""

    def run(self, feeds):
        out = super().run(feeds)
        x = float(next(iter(feeds.values())).mean())
        return {k: v + np.float32(0.05 * np.sin(1000 * x)) for k, v in out.items()}


def _report(model, ds, monkeypatch, chunk, chunk_bytes=validate.CHUNK_BYTES):
    monkeypatch.setattr(validate, "CHUNK_SAMPLES", chunk)
    monkeypatch.setattr(validate, "CHUNK_BYTES", chunk_bytes)
    ref, art = ReferenceRunner(model), _Noisy(model)
    return validate_runner(art, ref, ds, min_cosine=0.5)


def test_chunked_turns_give_the_per_sample_report(monkeypatch):
    from conftest import build_tiny_cnn

    model = build_tiny_cnn()
    rng = np.random.default_rng(3)
    ds = ArrayDataset({"input": rng.uniform(0, 1, (37, 3, 16, 16)).astype(np.float32)},
                      labels=rng.integers(0, 10, 37))
    m = onnx.ModelProto()
    m.CopyFrom(model)
    base = _report(m, ds, monkeypatch, 1)
    assert base["samples"] == 37 and base["cosine"] < 1.0
    for chunk, nbytes in ((16, validate.CHUNK_BYTES), (5, validate.CHUNK_BYTES), (64, 1)):
        assert _report(m, ds, monkeypatch, chunk, nbytes) == base, (chunk, nbytes)
