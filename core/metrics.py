"""Agreement metrics between an artifact's outputs and the FP32 reference, accumulated sample by sample."""
from __future__ import annotations

import numpy as np


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
        self.nonfinite = 0

    def update(self, cand: dict[str, np.ndarray], ref: dict[str, np.ndarray], label: int | None = None) -> None:
        self.samples += 1
        for n in self.names:
            c = np.asarray(cand[n], dtype=np.float64).ravel()
            r = np.asarray(ref[n], dtype=np.float64).ravel()
            if c.shape != r.shape:
                raise ValueError(f"output '{n}' has {c.size} elements on the artifact but {r.size} on the reference")
            if not np.all(np.isfinite(c)):
                self.nonfinite += 1
                c = np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)
            self.dot[n] += float(c @ r)
            self.nc[n] += float(c @ c)
            self.nr[n] += float(r @ r)
            self.max_abs[n] = max(self.max_abs[n], float(np.max(np.abs(c - r))) if c.size else 0.0)
            self.ref_absmax[n] = max(self.ref_absmax[n], float(np.max(np.abs(r))) if r.size else 0.0)
        first = self.names[0]
        c0, r0 = np.asarray(cand[first]), np.asarray(ref[first])
        if self.classifies(r0):
            pc, pr = int(np.argmax(c0.reshape(-1))), int(np.argmax(r0.reshape(-1)))
            self.classified += 1
            self.top1_same += pc == pr
            if label is not None:
                self.labelled += 1
                self.correct += pc == label
                self.ref_correct += pr == label

    @staticmethod
    def classifies(out: np.ndarray) -> bool:
        return out.ndim >= 1 and out.size == out.shape[-1] and out.shape[-1] > 1

    def cosine(self, name: str) -> float:
        denom = np.sqrt(self.nc[name] * self.nr[name])
        if denom == 0:
            return 1.0 if self.nc[name] == self.nr[name] else 0.0
        return float(self.dot[name] / denom)

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
        if self.labelled:
            out["top1_accuracy"] = self.correct / self.labelled
            out["reference_top1_accuracy"] = self.ref_correct / self.labelled
            out["labelled_samples"] = self.labelled
        return out
