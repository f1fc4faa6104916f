"""Typed `-O` options of the TensorRT backend and the optimization profile for dynamic inputs.

Shapes are written as trtexec writes them (`input:1x3x224x224`, several joined by commas), so a user
can move a working trtexec command line over unchanged.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from edgec.core.errors import InputError
from edgec.core.options import as_bool, as_choice, as_number

from .toolchain import TOOLCHAINS

LOG_LEVELS = ("off", "error", "warning", "info", "verbose")
NAME = "tensorrt"

OPTION_DEFAULTS: dict[str, tuple[Any, str]] = {
    "toolchain": ("auto", "auto (standard TensorRT when installed, else TensorRT-RTX) | tensorrt | tensorrt-rtx"),
    "target": ("auto", "GPU profile (rtx-3090, rtx-4090, rtx-5090, jetson-orin) or compute capabilities "
                       "(sm89, sm86,sm89); auto = the GPU here, else every RTX target from SM80 up"),
    "opt_level": (3, "builder optimization level 0-5 (higher: longer build, faster engine)"),
    "workspace": (None, "workspace memory pool limit in MiB (default: TensorRT's, the GPU's memory)"),
    "timing_cache": ("auto", "standard TensorRT: auto/true = reuse and extend $EDGEC_CACHE_DIR/tensorrt/timing.cache "
                             "(~/.cache/edgec), a PATH = that file, false = none; TensorRT-RTX has no timing cache"),
    "shapes": (None, "dynamic inputs at one shape: name:1x3x224x224[,name2:...] (min = opt = max)"),
    "min_shapes": (None, "optimization profile, smallest shapes: name:1x3x224x224[,...]"),
    "opt_shapes": (None, "optimization profile, shapes to tune for"),
    "max_shapes": (None, "optimization profile, largest shapes"),
    "dla_core": (None, "standard TensorRT on Jetson: run on DLA core N (GPU fallback for layers DLA lacks)"),
    "log": ("off", "TensorRT's log to trt_build.log in the artifact: off|error|warning|info|verbose"),
}

_SHAPE = re.compile(r"^\s*(.+?):(\d+(?:x\d+)*)\s*$")


def parse_shapes(option: str, text) -> dict[str, tuple[int, ...]]:
    """`a:1x3x8x8,b:1x4` -> {"a": (1, 3, 8, 8), "b": (1, 4)}. Names may contain ':' (the last one splits)."""
    if text in (None, ""):
        return {}
    if isinstance(text, Mapping):
        return {str(k): tuple(int(d) for d in v) for k, v in text.items()}
    out = {}
    for part in str(text).split(","):
        m = _SHAPE.match(part)
        if not m:
            raise InputError(f"{NAME} option {option}={text!r}: write each input as name:1x3x224x224, joined by commas")
        out[m.group(1)] = tuple(int(d) for d in m.group(2).split("x"))
    return out


def validate(options: dict) -> dict:
    opts = dict(options)
    opts["toolchain"] = as_choice(NAME, "toolchain", opts["toolchain"], TOOLCHAINS)
    opts["opt_level"] = as_number(NAME, "opt_level", opts["opt_level"], int, 0)
    if opts["opt_level"] > 5:
        raise InputError(f"{NAME} option opt_level={opts['opt_level']} must be 0..5")
    if opts["workspace"] not in (None, ""):
        opts["workspace"] = as_number(NAME, "workspace", opts["workspace"], int, 1)
    else:
        opts["workspace"] = None
    if opts["dla_core"] not in (None, "", "none"):
        opts["dla_core"] = as_number(NAME, "dla_core", opts["dla_core"], int, 0)
    else:
        opts["dla_core"] = None
    opts["log"] = as_choice(NAME, "log", "off" if opts["log"] is None else opts["log"], LOG_LEVELS)
    tc = opts["timing_cache"]
    if tc is None or str(tc).strip().lower() == "auto":
        opts["timing_cache"] = "auto"
    elif str(tc).strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        opts["timing_cache"] = as_bool(NAME, "timing_cache", tc)
    else:
        opts["timing_cache"] = str(tc)
    for k in ("shapes", "min_shapes", "opt_shapes", "max_shapes"):
        parse_shapes(k, opts[k])  # a malformed spec fails now, before any TensorRT work
    if opts["shapes"] and any(opts[k] for k in ("min_shapes", "opt_shapes", "max_shapes")):
        raise InputError(f"{NAME} options: give either shapes= or min_shapes/opt_shapes/max_shapes, not both")
    return opts


def profile_shapes(opts: Mapping, inputs: Mapping[str, tuple]) -> dict[str, tuple[tuple, tuple, tuple]]:
    """{input: (min, opt, max)} for every input with a dynamic (-1) dimension; one-line errors otherwise.

    `inputs` maps each network input to its shape, -1 for dynamic dims. A shape given for a static input
    must be its shape (so one command line serves models with and without a dynamic batch)."""
    dynamic = {k: v for k, v in inputs.items() if any(d < 0 for d in v)}
    if opts.get("shapes"):
        one = parse_shapes("shapes", opts["shapes"])
        given = {k: (v, v, v) for k, v in one.items()}
    else:
        mins, opts_, maxs = (parse_shapes(k, opts.get(k)) for k in ("min_shapes", "opt_shapes", "max_shapes"))
        given = {}
        for name in set(mins) | set(opts_) | set(maxs):
            missing = [k for k, d in (("min_shapes", mins), ("opt_shapes", opts_), ("max_shapes", maxs)) if name not in d]
            if missing:
                raise InputError(f"{NAME}: input '{name}' has no {missing[0]}; give min_shapes, opt_shapes and "
                                 "max_shapes for it (or shapes=NAME:DIMS for one static shape)")
            given[name] = (mins[name], opts_[name], maxs[name])
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise InputError(f"{NAME}: shape given for '{unknown[0]}', which is not an input of the model "
                         f"(inputs: {', '.join(inputs)})")
    for name in sorted(set(given) - set(dynamic)):
        if any(tuple(s) != tuple(inputs[name]) for s in given[name]):
            raise InputError(f"{NAME}: input '{name}' is static {'x'.join(map(str, inputs[name]))}; the shape "
                             f"given for it differs (only dynamic dimensions can be chosen)")
    out = {}
    for name, net_shape in dynamic.items():
        if name not in given:
            dims = "x".join("?" if d < 0 else str(d) for d in net_shape)
            example = "x".join("1" if d < 0 else str(d) for d in net_shape)
            raise InputError(f"{NAME}: input '{name}' has dynamic shape {dims}; TensorRT needs an optimization "
                             f"profile: pass -O shapes={name}:{example} (or min_shapes/opt_shapes/max_shapes)")
        lo, mid, hi = given[name]
        for label, s in (("min", lo), ("opt", mid), ("max", hi)):
            if len(s) != len(net_shape) or any(d >= 0 and d != g for d, g in zip(net_shape, s)):
                raise InputError(f"{NAME}: {label} shape {'x'.join(map(str, s))} for '{name}' does not fit its "
                                 f"network shape {'x'.join('?' if d < 0 else str(d) for d in net_shape)}")
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
            raise InputError(f"{NAME}: shapes for '{name}' must satisfy min <= opt <= max in every dimension")
        out[name] = (lo, mid, hi)
    return out


def cache_root() -> Path:
    """edgec's cache, as the TVM tuning database and calibration cache choose it."""
    base = os.environ.get("EDGEC_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "edgec") / "tensorrt"
