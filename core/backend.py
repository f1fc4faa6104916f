"""The backend contract: what a plugin returns from the `edgec_backends` hook.

A backend declares what it needs from the core (`Requirements`: precisions, quantization flavour,
layout, opset range) and whether it can run here (`available()`), then implements lowering of the
core-optimized ONNX to native files and loading those files into a `Runner`. Calibration,
benchmarking and per-layer info have defaults a backend may override.

Designed against all five targets, see ARCHITECTURE.md:
  TensorRT  - explicit Q/DQ ONNX -> engine; build and run machines may differ (`can_run` vs `can_build`).
  OpenVINO  - IR xml/bin; Q/DQ becomes FakeQuantize; has its own NNCF calibrator (`calibrate`).
  TVM       - a .so for a target triple, cross-compiled; a tuning database (`options`, cache dir).
  TFLite    - NHWC layout, every tensor quantized, int8 I/O (`Requirements.layout`, QuantFlavour).
  SNPE/QNN  - vendor tools as subprocesses, raw input lists, HTP context binaries (`available()` hint).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # annotations only: `edgec backends` imports this module and must stay cheap
    import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class QuantFlavour:
    """How the core should quantize for a backend; each backend picks the format its kernels run fastest.

    placement:
      "weighted"     Q/DQ on the inputs of weighted ops (Conv/Gemm/MatMul) and residual Adds
                     (TensorRT explicit quantization, ONNX Runtime QDQ, OpenVINO FakeQuantize).
      "every_tensor" every activation quantized, fixed output ranges for Softmax/Sigmoid/Tanh,
                     shared scales across Concat/pooling/Reshape (TFLite integer-only).
      "qnn"          every tensor, activations uint8 or uint16 (Qualcomm HTP).
    activation_dtype: "uint8" | "int8" | "uint16". ONNX Runtime's CPU kernels run u8 activations
      with s8 weights ~2.3x faster than s8/s8, so a backend must be able to say which it wants.
    quantize_io: model inputs/outputs become integer too (integer-only accelerators).
    reduce_range: int8 weights on the 7-bit grid [-64, 64] (ORT's reduce_range). x86 CPUs without VNNI
      multiply u8 x s8 pairs with vpmaddubsw, whose int16 pair sum saturates for full-range weights:
      on an AVX2-only AMD EPYC the Fashion-MNIST CNN's INT8 agreed with FP32 on 92.0 % of 1,000 images
      with 8-bit weights, 99.8 % with 7-bit ones. Only the backend knows where its kernels run.
    depthwise_full_range: with reduce_range, depthwise conv weights keep the 8-bit grid. ONNX Runtime's
      (MLAS) depthwise u8 x s8 kernel accumulates in int32 on AVX2: against Q/DQ emulation it is exact with
      +-127 weights at u8 inputs of 255, where its pointwise and Cin=3 stem convs are off by 28 and 22
      output steps (saturation). Depthwise weights have 9 or 25 values per channel, so 7 bits cost them most.
    float_outputs: ("weighted" and "qnn") graph outputs keep no Q/DQ, so the last layer runs its integer
      kernel with a float result instead of rounding the answer to 8 bits on the way out. OpenVINO
      runs such a layer at full speed (EfficientNet-Lite0: logit NMSE 2.9e-3 -> 2.6e-3 on the
      calib500 split, latency 0.99-1.00x); ONNX Runtime's QLinearConv needs a quantized output, so a
      model ending in a Conv would fall back to a float Conv there. In "qnn": the unweighted ops after
      the last weighted layer (pooling, reshapes, Softmax) stay float (HTP runs them in fp16), so
      pooled logits are not rounded to an 8-bit grid (qdq.float_tail).
    float_bias: biases of weighted ops stay float initializers instead of int32 DequantizeLinear at
      s_in*s_w. TensorRT's ONNX parser rejects an int32 DequantizeLinear ("must have type FP8, FP4,
      Int4, Int8, or UInt8") and folds a float bias into its int8 kernel itself.
    """

    placement: str = "weighted"
    activation_dtype: str = "uint8"
    weight_dtype: str = "int8"
    per_channel: bool = True
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    quantize_io: bool = False
    float_outputs: bool = False
    reduce_range: bool = False
    depthwise_full_range: bool = False
    float_bias: bool = False


@dataclass(frozen=True)
class Requirements:
    """What a backend needs from the core before it lowers a model."""

    precisions: tuple[str, ...] = ("fp32",)
    quant: QuantFlavour = field(default_factory=QuantFlavour)
    layout: str = "NCHW"  # "NHWC" for TFLite: the core transposes model I/O for it
    opset_range: tuple[int, int] | None = None  # inclusive; the core converts versions into it
    # Where the core's Q/DQ model is not wanted at all (e.g. the backend calibrates itself).
    core_int8: bool = True


@dataclass(frozen=True)
class Availability:
    """Whether a backend can work on this machine; when not, why and what to install."""

    ok: bool
    reason: str = ""
    hint: str = ""
    # A backend may be able to build here but not run (TensorRT engines need a GPU; SNPE DLCs a phone).
    can_run: bool = True

    @classmethod
    def missing_module(cls, module: str, pip_name: str, extra: str | None = None) -> "Availability":
        fix = f"pip install 'edgec[{extra}]'" if extra else f"pip install {pip_name}"
        return cls(False, f"Python module '{module}' is not installed", fix)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple  # ints, or str for symbolic dims

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: Mapping) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass
class LatencyStats:
    runs: int
    warmup: int
    threads: int | None
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    # Medians of consecutive blocks of the timed runs (core/benchmark/stats.py): interleaved cells share the
    # blocks, so paired block ratios give a ratio its confidence interval.
    block_medians_ms: list[float] | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


class Runner:
    """A loaded artifact that maps {input name: array} to {output name: array} on the backend's runtime."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def time_once(self, feeds: Mapping[str, np.ndarray]) -> float:
        """One timed inference in seconds; interleaved benchmarks (`edgec compare`) call this directly."""
        t0 = time.perf_counter()
        self.run(feeds)
        return time.perf_counter() - t0

    def benchmark(self, feeds: Mapping[str, np.ndarray], runs: int = 50, warmup: int = 5) -> LatencyStats:
        import numpy as np

        for _ in range(warmup):
            self.run(feeds)
        times = np.array([self.time_once(feeds) for _ in range(runs)]) * 1e3
        return LatencyStats(runs, warmup, getattr(self, "threads", None), float(np.median(times)),
                            float(np.percentile(times, 90)), float(times.mean()), float(times.min()))

    # True where `throughput` drives the runtime's own parallel requests (then no extra runners are loaded).
    has_throughput = False

    def throughput(self, feeds: Mapping[str, np.ndarray], streams: int, *, iterations: int | None = None,
                   duration: float | None = None, threads: int | None = None):
        """The runtime's own parallel-request path (OpenVINO's async requests over NUM_STREAMS) as (per-request latencies in s,
        wall seconds, a description), or None: then `edgec benchmark` runs one thread per stream, each over
        its own runner."""
        return None

    def close(self) -> None:
        pass


@dataclass
class LoweringContext:
    """Everything a backend's `lower` gets. `model` is the core-optimized (and, for int8/fp16,
    core-quantized unless the backend calibrates itself) ONNX model."""

    model: Any  # onnx.ModelProto
    source_model: Any  # the FP32 model as the user gave it (after optimization), for backends that calibrate
    precision: str
    out_dir: Path  # write native files here; the core adds manifest.json and renames atomically
    options: dict
    calibration: Any = None  # edgec.core.data.Dataset or None
    validation: Any = None  # edgec.core.data.Dataset or None (labels enable accuracy-aware calibration)
    calib_method: str = "minmax"
    calib_samples: int | None = None
    max_drop: float | None = None  # accuracy budget in top-1 points (or agreement points) for int8
    min_agreement: float | None = None  # int8: % top-1 agreement with FP32 the repair must reach on `validation`
    keep_fp32: tuple = ()  # node names / op types the quantizer leaves FP32 (--keep-fp32); backends that
    #                        call the core's quantize themselves pass it on as keep_fp32=
    float_tensors: tuple = ()  # int8: activation tensors left unquantized (--float-tensors), float_tensors=
    threads: int | None = None
    progress: Callable[[str], None] = lambda msg: None
    # A backend may fill this; it lands in the manifest under "backend_info".
    info: dict = field(default_factory=dict)


class Backend:
    """Base class for backends. Subclasses set `name`, `requirements` and implement the abstract methods."""

    name: str = ""
    description: str = ""
    requirements: Requirements = Requirements()
    # Backend-specific options: name -> (default, help). The CLI accepts them as `--option key=value`.
    option_defaults: dict[str, tuple[Any, str]] = {}

    def available(self) -> Availability:
        return Availability(True)

    def quant_flavour(self, options: Mapping[str, Any]) -> QuantFlavour:
        """The flavour for this compile: `requirements.quant` unless the options or the host change it
        (ONNX Runtime narrows the weight grid on x86 CPUs without VNNI)."""
        return self.requirements.quant

    def toolchain(self) -> dict[str, str]:
        """Name -> version of every tool that shaped the artifact; recorded in the manifest."""
        return {}

    def calibrate(self, ctx: LoweringContext):
        """Return a quantized model of the backend's own making (any object its `lower` understands),
        or None to take the core's Q/DQ model. When it returns a model, the core skips its own
        quantization and passes the result to `lower` as `ctx.model`; a report dict may be put in
        `ctx.info["calibration"]`."""
        return None

    def lower(self, ctx: LoweringContext) -> list[str]:
        """Write the native artifact into ctx.out_dir; return the file names written."""
        raise NotImplementedError

    def load(self, artifact_dir: Path, manifest: Mapping, threads: int | None = None, **options) -> Runner:
        raise NotImplementedError

    def layer_info(self, runner: Runner) -> dict | None:
        """Per-layer info (e.g. which kernels ran in INT8); optional."""
        return None

    def intermediates(self, artifact_dir: Path, manifest: Mapping, names: list[str],
                      threads: int | None = None) -> "Runner | None":
        """Optional (`edgec debug`): a Runner over the artifact whose `run` also returns the tensors of the
        FP32 ONNX graph named in `names` that the runtime can expose, keyed by those ONNX names, each as
        the artifact's consumers see it (a quantized tensor dequantized to float, in the ONNX layout).
        Set `runner.exposed` ({onnx name: runtime name}) and `runner.note` (how they were exposed and
        what that may change, e.g. a fusion the extra outputs block). None: not implemented; raise
        UnsupportedError with the reason where this artifact or host cannot expose them."""
        return None

    def audit(self, artifact_dir: Path, manifest: Mapping) -> "list[dict] | None":
        """Optional (`edgec inspect ARTIFACT`, manifest `audit`): per compute layer of the ONNX graph, the
        precision that actually executes, read from the runtime (its optimized or execution graph), not
        from what the quantizer intended: [{"name": ONNX node name, "op": ONNX op type, "precision":
        "int8"|"int16"|"fp16"|"fp32"|..., "kernel": what the runtime runs, "why": reason it is not int8
        or None}]. None: not implemented."""
        return None

    def validate_options(self, options: Mapping[str, Any]) -> dict:
        """Fill defaults and reject unknown options with a one-line InputError."""
        from edgec.core.errors import InputError

        unknown = set(options) - set(self.option_defaults)
        if unknown:
            known = ", ".join(sorted(self.option_defaults)) or "none"
            raise InputError(f"backend '{self.name}' has no option {sorted(unknown)[0]!r} (known: {known}); "
                             "use one of those with -O KEY=VALUE")
        return {k: options.get(k, default) for k, (default, _help) in self.option_defaults.items()}

