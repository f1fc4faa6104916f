"""Runs an artifact on its own backend's runtime against the FP32 ONNX on onnxruntime."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from edgec.core import progress
from edgec.core.backend import Runner
from edgec.core.data import Dataset, Sample
from edgec.core.metrics import OutputAgreement
from edgec.core.model_io import input_specs, random_feeds

DEFAULT_MIN_COSINE = {"fp32": 0.999, "fp16": 0.999, "int8": 0.99}
RANDOM_SAMPLES = 8


class ReferenceRunner(Runner):
    """The numerical reference: the FP32 ONNX model on onnxruntime's CPU provider."""

    def __init__(self, model: onnx.ModelProto | str, threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Validation alternates this session with the artifact's: spinning pool threads would take the
        # cores from the artifact's turn (and numpy's, between runs) for nothing.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        src = model if isinstance(model, str) else model.SerializeToString()
        self._model = model
        self.threads = threads
        self.runtime = "onnxruntime"
        try:
            self.session = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        except Exception as ort_error:  # noqa: BLE001
            # An op or type onnxruntime has no kernel for (uint64 TopK, blocked DequantizeLinear) may still
            # run on the backend: onnx's reference runtime is then the FP32 reference (slow, but exact).
            from onnx.reference import ReferenceEvaluator

            try:
                self.session = ReferenceEvaluator(model)
            except Exception:  # noqa: BLE001
                raise ort_error from None
            self.runtime = "onnx.reference"
            self.output_names = list(self.session.output_names)
            self._inputs = set(self.session.input_names)
            return
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._inputs = {i.name for i in self.session.get_inputs()}

    def run(self, feeds):
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        try:
            return dict(zip(self.output_names, self.session.run(None, feeds)))
        except Exception as e:  # noqa: BLE001 - the reference itself failing is not the artifact's fault
            if self.runtime == "onnxruntime":  # a kernel's own refusal (an Attention mask shape, bfloat16
                try:                            # feeds): onnx's reference runtime, as when it cannot load
                    from onnx.reference import ReferenceEvaluator

                    ref = ReferenceEvaluator(self._model)
                    out = dict(zip(ref.output_names, ref.run(None, {k: v for k, v in feeds.items()
                                                                    if k in set(ref.input_names)})))
                    self.session, self.runtime = ref, "onnx.reference"
                    return out
                except Exception:  # noqa: BLE001 - neither runs it: report onnxruntime's reason
                    pass
            from edgec.core.errors import UnsupportedError

            from edgec.core.diagnose import runtime_error
            raise UnsupportedError(f"the FP32 reference ({self.runtime}) cannot run the model on this data: "
                                   f"{runtime_error(e, None, self.runtime)}") from e


@dataclass
class RandomData(Dataset):
    """Seeded random inputs, used when the user gives no validation data (and said so in the manifest)."""

    specs: list
    n: int = RANDOM_SAMPLES
    seed: int = 0
    source: str = "random"

    def __len__(self):
        return self.n

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n):
            yield Sample(random_feeds(self.specs, rng))

    def describe(self) -> str:
        return f"seeded random normal inputs (seed {self.seed}, {self.n} samples)"


def validate_runner(runner: Runner, reference: Runner, data: Dataset | None, *, model: onnx.ModelProto | None = None,
                    min_cosine: float | None = None, desc: str = "validate") -> dict:
    """Compare `runner` to `reference` on `data` (random inputs when None); returns the manifest's
    `validation` section with `passed` set against `min_cosine` (when given)."""
    degenerate = []
    if data is None:
        if model is None:
            raise ValueError("random validation needs the model to know input shapes")
        from edgec.core.shapes import degenerate_dims

        data = RandomData(input_specs(model))
        degenerate = degenerate_dims(data.specs)
    names = reference.output_names
    acc = OutputAgreement(names)
    shapes = None
    # The two runtimes take turns per chunk of samples, not per sample: each one's idle threads spin
    # for a while after a run (onnxruntime's intra-op pool, TVM's workers) and took the cores from the
    # other's next run; chunks of 16 ran EfficientNet-Lite0 reference + TVM 0.80-0.89x the time of
    # per-sample turns (4 interleaved rounds, load 23). The same samples are compared in the same order.
    chunk, held = [], 0
    for sample in progress.bar(data, total=len(data), desc=desc, unit="sample"):
        if shapes is None:
            shapes = {k: list(np.shape(v)) for k, v in sample.feeds.items() if hasattr(v, "shape") or np.isscalar(v)}
        feeds = sample_feeds(sample)
        chunk.append((sample.label, feeds, reference.run(feeds)))
        held += sum(int(getattr(v, "nbytes", 0)) for v in chunk[-1][2].values())
        if len(chunk) >= CHUNK_SAMPLES or held >= CHUNK_BYTES:
            _compare_chunk(runner, chunk, names, acc)
            chunk, held = [], 0
    _compare_chunk(runner, chunk, names, acc)
    report = acc.summary()
    report["data"] = data.describe() if isinstance(data, RandomData) else getattr(data, "source", "")
    report["reference_runtime"] = getattr(reference, "runtime", "onnxruntime")
    report["random_inputs"] = isinstance(data, RandomData)
    report["input_shapes"] = shapes  # what was validated (the first sample's shapes)
    if degenerate:
        report["degenerate_shape"] = (f"random inputs had to make up {', '.join(degenerate)} (set to 1); give "
                                      "--input-shape NAME=DxD... or --val data at a realistic shape")
    if min_cosine is not None:
        report["min_cosine"] = min_cosine
        report["passed"] = bool(report["cosine"] >= min_cosine and not report.get("mismatches") and not degenerate)
    return report


def sample_feeds(sample: Sample) -> dict:
    """A sample's feeds as both runtimes get them (scalars as 0-d arrays): what the reference cache hashes."""
    return {k: np.asarray(v) if isinstance(v, (np.generic, int, float, bool)) else v for k, v in sample.feeds.items()}


CHUNK_SAMPLES = 16
CHUNK_BYTES = 64 << 20  # reference outputs held per chunk (a segmentation net's masks: fewer samples per turn)


def _compare_chunk(runner: Runner, chunk, names, acc) -> None:
    for label, feeds, ref in chunk:
        out = runner.run(feeds)
        missing = [n for n in names if n not in out]
        if missing:
            raise RuntimeError(f"artifact produced no output '{missing[0]}' (it produced {sorted(out)})")
        acc.update(out, ref, label)


def failure_reason(report: dict) -> str:
    """Why a validation failed, in the words of what differed (not a cosine a mismatch set to 0)."""
    if report.get("degenerate_shape"):
        return f"not a pass at a degenerate shape {report.get('input_shapes')}: {report['degenerate_shape']}"
    mism = report.get("mismatches") or {}
    if mism:
        name, m = next(iter(mism.items()))
        return f"output '{name}' differs from the reference: {m['reason']} ({m['samples']} of {report['samples']} samples)"
    worst = min(report.get("per_output", {}).items(), key=lambda kv: kv[1]["cosine"], default=(None, None))
    where = f" (output '{worst[0]}')" if worst[0] is not None and len(report.get("per_output", {})) > 1 else ""
    return f"cosine {report['cosine']:.6f} < {report.get('min_cosine')}{where}, max abs error {report['max_abs_err']:.3g}"
