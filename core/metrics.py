"""Agreement metrics between an artifact's outputs and the FP32 reference, accumulated sample by sample."""
from __future__ import annotations

import numpy as np


def _numeric(a) -> bool:
    if a is None or isinstance(a, (list, tuple)):  # a sequence (maybe of ragged tensors) or an empty optional
        return False
    dt = np.asarray(a).dtype
    if dt.kind in "biuf":
        return True
    if dt.kind in "OUSMm":
        return False
    try:  # ml_dtypes' bfloat16 / float8 (kind 'V') are numbers that cast to float64
        np.zeros(0, dt).astype(np.float64)
        return True
    except (TypeError, ValueError):
        return False


def _len(x) -> str:
    return str(len(x)) if isinstance(x, (list, tuple)) else "a tensor, not a sequence, of"


class OutputAgreement:
    """Streams (candidate, reference) output pairs and summarizes how close they are.

    Cosine is computed over all samples of an output flattened together (the way Polygraphy and NNCF
    report it), max_abs_err is the worst element, and top-1 is taken on the last axis of the first
    output when it looks like class scores.
    """

    def __init__(self, output_names: list[str]):
        self.names = list(output_names)
        self.dot = {n: 0.0 for n in self.names}
        self.nc = {n: 0.0 for n in self.names}
        self.nr = {n: 0.0 for n in self.names}
        self.max_abs = {n: 0.0 for n in self.names}
        self.ref_absmax = {n: 0.0 for n in self.names}
        self.samples = 0
        self.top1_same = 0
        self.classified = 0
        self.correct = 0
        self.ref_correct = 0
        self.labelled = 0
        self.nonfinite = 0  # samples whose NaN/inf positions differ from the reference's
        self.mismatches: dict[str, str] = {}  # output -> first structural difference
        self.mismatch_samples: dict[str, int] = {}

    def update(self, cand: dict, ref: dict, label: int | None = None) -> None:
        self.samples += 1
        for n in self.names:
            self._compare(n, cand[n], ref[n])
        first = self.names[0]
        c0, r0 = cand[first], ref[first]
        if _numeric(r0) and _numeric(c0) and np.shape(c0) == np.shape(r0) and self.classifies(np.asarray(r0)):
            c0, r0 = np.asarray(c0), np.asarray(r0)
            pc, pr = int(np.argmax(c0.reshape(-1))), int(np.argmax(r0.reshape(-1)))
            self.classified += 1
            self.top1_same += pc == pr
            if label is not None:
                self.labelled += 1
                self.correct += pc == label
                self.ref_correct += pr == label

    def _compare(self, n: str, c, r) -> None:
        """One output of one sample. Sequences compare element by element, empty optionals must both be
        empty, strings and booleans exactly; numbers: NaN/inf positions exactly, finite values by cosine
        and max abs error. A structural difference (shape, length, kind) is a mismatch, never an exception."""
        if r is None or c is None:
            if (r is None) != (c is None):
                self._mismatch(n, "an empty optional on one side only")
            return
        if isinstance(r, (list, tuple)) or isinstance(c, (list, tuple)):
            if not (isinstance(r, (list, tuple)) and isinstance(c, (list, tuple))) or len(r) != len(c):
                self._mismatch(n, f"sequence of {_len(c)} elements, reference has {_len(r)}")
                return
            for ci, ri in zip(c, r):
                self._compare(n, ci, ri)
            return
        c, r = np.asarray(c), np.asarray(r)
        if c.shape != r.shape:
            self._mismatch(n, f"shape {list(c.shape)}, reference {list(r.shape)}")
            return
        if not (_numeric(c) and _numeric(r)):
            if not np.array_equal(c.astype(str), r.astype(str)):
                self._mismatch(n, "string values differ")
            return
        c, r = c.astype(np.float64).ravel(), r.astype(np.float64).ravel()
        fc, fr = np.isfinite(c), np.isfinite(r)
        if not np.array_equal(fc, fr) or not np.array_equal(np.isnan(c), np.isnan(r)) or \
                not np.array_equal(c[~fc & ~np.isnan(c)], r[~fr & ~np.isnan(r)]):
            self.nonfinite += 1
            self._mismatch(n, "NaN/inf at other positions than the reference's")
            return
        c, r = c[fc], r[fr]
        self.dot[n] += float(c @ r)
        self.nc[n] += float(c @ c)
        self.nr[n] += float(r @ r)
        self.max_abs[n] = max(self.max_abs[n], float(np.max(np.abs(c - r))) if c.size else 0.0)
        self.ref_absmax[n] = max(self.ref_absmax[n], float(np.max(np.abs(r))) if r.size else 0.0)

    def _mismatch(self, n: str, why: str) -> None:
        self.mismatches.setdefault(n, why)
        self.mismatch_samples[n] = self.mismatch_samples.get(n, 0) + 1

    @staticmethod
    def classifies(out: np.ndarray) -> bool:
        return out.ndim >= 1 and out.size == out.shape[-1] and out.shape[-1] > 1

    def cosine(self, name: str) -> float:
        if name in self.mismatches:
            return 0.0
        denom = np.sqrt(self.nc[name] * self.nr[name])
        if denom == 0:  # an all-zero side (or no finite values): equal when the other side is (close to) zero too
            return 1.0 if self.max_abs[name] <= 1e-6 else 0.0
        return float(min(1.0, self.dot[name] / denom))

    def summary(self) -> dict:
        per_output = {n: {"cosine": self.cosine(n), "max_abs_err": self.max_abs[n], "ref_abs_max": self.ref_absmax[n]}
                      for n in self.names}
        out = {
            "samples": self.samples,
            "cosine": min((v["cosine"] for v in per_output.values()), default=1.0),
            "max_abs_err": max((v["max_abs_err"] for v in per_output.values()), default=0.0),
            "top1_agreement": self.top1_same / self.classified if self.classified else None,
            "per_output": per_output,
        }
        if self.nonfinite:
            out["nonfinite_samples"] = self.nonfinite
        if self.mismatches:
            out["mismatches"] = {n: {"reason": why, "samples": self.mismatch_samples[n]}
                                 for n, why in self.mismatches.items()}
        if self.labelled:
            out["top1_accuracy"] = self.correct / self.labelled
            out["reference_top1_accuracy"] = self.ref_correct / self.labelled
            out["labelled_samples"] = self.labelled
        return out
