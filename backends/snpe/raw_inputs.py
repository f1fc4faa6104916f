"""SNPE/QAIRT input lists and .raw files, written from an edgec Dataset and read back.

What the SDK tools read (snpe-dlc-quantize / qairt-quantizer / snpe-net-run --input_list):
  * one .raw file per input per sample: the tensor's bytes, C order, no header, float32 unless the
    DLC was told otherwise;
  * 4-D image inputs in NHWC order, because the converters turn an ONNX NCHW input into an NHWC
    graph input by default (`layout="nchw"` keeps ONNX's order, for DLCs converted with
    `--preserve_io layout`);
  * an input list: an optional first line `#out1 out2` naming the outputs to write, then one line per
    sample, `name:=path` for each input, separated by spaces (the form every SDK version accepts for
    one input or several);
  * snpe-net-run writes `Result_<i>/<output name>.raw` for sample i.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from edgec.core.backend import TensorSpec
from edgec.core.errors import InputError

LAYOUTS = ("nhwc", "nchw")


def _to_sdk(a: np.ndarray, layout: str) -> np.ndarray:
    return np.transpose(a, (0, 2, 3, 1)) if layout == "nhwc" and a.ndim == 4 else a


def _from_sdk(a: np.ndarray, layout: str) -> np.ndarray:
    return np.transpose(a, (0, 3, 1, 2)) if layout == "nhwc" and a.ndim == 4 else a


def _safe(name: str) -> str:
    """File-name form of a tensor name ("input:0", "a/b" are legal ONNX names)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def sdk_shape(spec: TensorSpec, layout: str) -> tuple:
    s = tuple(spec.shape)
    return (s[0], s[2], s[3], s[1]) if layout == "nhwc" and len(s) == 4 else s


def write_input_list(samples: Iterable, specs: Sequence[TensorSpec], folder: Path, layout: str = "nhwc",
                     outputs: Sequence[str] = (), list_name: str = "input_list.txt") -> tuple[Path, int]:
    """Write `samples` (edgec Samples or {name: array} feeds, batch 1) as .raw files plus an input list
    under `folder`; returns (list path, sample count). Paths in the list are absolute."""
    if layout not in LAYOUTS:
        raise InputError(f"raw input layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [("#" + " ".join(outputs))] if outputs else []
    n = 0
    for i, s in enumerate(samples):
        feeds = getattr(s, "feeds", s)
        entries = []
        for spec in specs:
            if spec.name not in feeds:
                raise InputError(f"sample {i} has no input '{spec.name}' (it has {', '.join(sorted(feeds))})")
            a = _to_sdk(np.asarray(feeds[spec.name], dtype=spec.dtype), layout)
            p = (folder / f"{i:06d}_{_safe(spec.name)}.raw").resolve()
            np.ascontiguousarray(a).tofile(p)
            entries.append(f"{spec.name}:={p}")
        lines.append(" ".join(entries))
        n += 1
    if n == 0:
        raise InputError("no samples to write into the SNPE input list")
    path = folder / list_name
    path.write_text("\n".join(lines) + "\n")
    return path, n


def _shape_for(spec: TensorSpec, layout: str) -> tuple[int, ...]:
    shape = sdk_shape(spec, layout)
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise InputError(f"tensor '{spec.name}' has dynamic shape {list(spec.shape)}; SNPE raw files need static "
                         "shapes (fix them when exporting the model)")
    return shape


def read_input_list(path: Path, specs: Sequence[TensorSpec], layout: str = "nhwc") -> tuple[list[str], list[dict]]:
    """(output names from the `#` line, [{name: array in ONNX layout}] per sample) from an input list."""
    by_name = {s.name: s for s in specs}
    outputs: list[str] = []
    samples = []
    for ln, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            outputs = line[1:].split()
            continue
        feeds = {}
        tokens = line.split()
        for j, tok in enumerate(tokens):
            name, sep, file = tok.partition(":=")
            if not sep:  # the one-input short form: a bare path
                if len(specs) != 1 or len(tokens) != 1:
                    raise InputError(f"{path}:{ln}: '{tok}' has no 'name:=' and the model has {len(specs)} inputs")
                name, file = specs[0].name, tok
            spec = by_name.get(name)
            if spec is None:
                raise InputError(f"{path}:{ln}: input '{name}' is not a model input ({', '.join(by_name)})")
            feeds[name] = read_raw(Path(file), spec, layout)
        samples.append(feeds)
    return outputs, samples


def read_raw(file: Path, spec: TensorSpec, layout: str = "nhwc") -> np.ndarray:
    shape = _shape_for(spec, layout)
    a = np.fromfile(file, dtype=spec.dtype)
    if a.size != int(np.prod(shape)):
        raise InputError(f"{file}: {a.size} {spec.dtype} values, but '{spec.name}' needs {int(np.prod(shape))} "
                         f"({'x'.join(map(str, shape))}, {layout})")
    return _from_sdk(a.reshape(shape), layout)


def read_results(out_dir: Path, outputs: Sequence[TensorSpec], count: int, layout: str = "nhwc") -> list[dict]:
    """snpe-net-run's `Result_<i>/<name>.raw` files back into {name: array} per sample, ONNX layout."""
    results = []
    for i in range(count):
        d = Path(out_dir) / f"Result_{i}"
        feeds: dict[str, np.ndarray] = {}
        for spec in outputs:
            cands = [d / f"{spec.name}.raw", d / f"{_safe(spec.name)}.raw"]
            f = next((c for c in cands if c.is_file()), None)
            if f is None:
                raise InputError(f"snpe-net-run wrote no {cands[0]} (found: "
                                 f"{', '.join(p.name for p in sorted(d.glob('*.raw'))) or 'nothing'})")
            feeds[spec.name] = read_raw(f, TensorSpec(spec.name, "float32", spec.shape), layout)
        results.append(feeds)
    return results


def write_results(results: Sequence[Mapping[str, np.ndarray]], out_dir: Path, layout: str = "nhwc") -> None:
    """The layout snpe-net-run writes, from arrays (what a test of read_results needs)."""
    for i, feeds in enumerate(results):
        d = Path(out_dir) / f"Result_{i}"
        d.mkdir(parents=True, exist_ok=True)
        for name, a in feeds.items():
            np.ascontiguousarray(_to_sdk(np.asarray(a, np.float32), layout)).tofile(d / f"{_safe(name)}.raw")
