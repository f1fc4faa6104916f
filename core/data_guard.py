"""Data files checked before numpy reads them, samples checked as they stream, warnings about data
that makes a compile's numbers meaningless.

- .npy / .npz headers declare a shape; numpy allocates it before reading. The header is read first
  (numpy.lib.format) and the declared bytes compared with the bytes present (the .npy file, the zip
  member's size) and with core/limits.py's limit, so [2^40] in a 200-byte file is one line, not an OOM.
- A file that is neither (a text file passed as --calib) is named as what it is, not "pickled data".
- NaN/Inf in an input sample names the input and the sample (otherwise calibration ranges go NaN and
  validation ends in "cosine nan" without naming the data).
- Calibration data with one value everywhere, or validation on the calibration data itself, passes
  validation for the wrong reason: both are warned about and recorded in the manifest's `warnings`.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np

from edgec.core.errors import InputError
from edgec.core.limits import check_bytes, element_count, human

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _header(f, what: str):
    from numpy.lib import format as fmt
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=1 << 16)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=1 << 16)
    except Exception as e:  # ValueError on a bad header, EOFError, SyntaxError from the header's literal
        raise InputError(f"{what} has an unreadable .npy header ({type(e).__name__}); re-create it with numpy.save") from None
    return shape, dtype, f.tell()


def _check_array(shape, dtype, have: int, what: str) -> None:
    if dtype.hasobject:
        raise InputError(f"{what} holds pickled objects (dtype {dtype}), which edgec never loads; save plain "
                         "numeric arrays")
    fix = "the file is truncated or its header is wrong: re-create it with numpy.save / numpy.savez"
    n = element_count(shape, what, fix)
    declared = n * dtype.itemsize
    check_bytes(declared, f"{what} (shape {list(shape)}, {dtype})", "split the data into several files")
    if declared > have:
        raise InputError(f"{what} declares shape {list(shape)} {dtype} ({human(declared)}) but holds {human(have)}; {fix}")


def sniff(path: Path) -> str:
    """'npy', 'npz', or raise InputError saying what the file looks like instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise InputError(f"cannot read {path} ({e.strerror or type(e).__name__}); check the file") from None
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if not head:
        raise InputError(f"{path} is empty (0 bytes); give an .npz, .npy, image folder or JPEG pack")
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head) / len(head)
    looks = "a text file" if printable > 0.95 else "neither .npy nor .npz (unknown binary)"
    raise InputError(f"{path} is {looks}, not numpy data; save arrays with numpy.savez (keys = model input names)")


def check_npy(path: Path) -> None:
    with open(path, "rb") as f:
        shape, dtype, offset = _header(f, str(path))
    _check_array(shape, dtype, path.stat().st_size - offset, str(path))


def check_npz(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            if not members:
                raise InputError(f"{path} is an .npz with no arrays; save the data with numpy.savez(path, "
                                 "<input name>=array, labels=...)")
            for m in members:
                what = f"{path} member '{m.filename}'"
                if m.file_size < len(NPY_MAGIC):
                    raise InputError(f"{what} is not a numpy array; re-create the file with numpy.savez")
                with z.open(m) as f:
                    shape, dtype, offset = _header(f, what)
                _check_array(shape, dtype, m.file_size - offset, what)
    except InputError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable .npz ({type(e).__name__}: damaged zip); re-create it "
                         "with numpy.savez") from None


def check_finite(feeds, source: str, index: int) -> None:
    for name, a in feeds.items():
        if not isinstance(a, np.ndarray):  # sequence/optional inputs: check_feeds leaves them to the runtime
            continue
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            kinds = " and ".join(k for k, f in (("NaN", np.isnan), ("Inf", np.isinf)) if f(a).any())
            raise InputError(f"data {source}: sample {index} of input '{name}' has {bad} {kinds} value(s); "
                             "remove or fix that sample (NaN/Inf make calibration ranges and validation meaningless)")


class Stats:
    """Per-input min/max over the samples streamed by, for the degenerate-data warning."""

    def __init__(self):
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.samples = 0

    def update(self, feeds) -> None:
        self.samples += 1
        for k, a in feeds.items():
            if isinstance(a, np.ndarray) and a.dtype.kind in "fiub" and a.size:
                lo, hi = float(a.min()), float(a.max())
                self.lo[k] = min(self.lo.get(k, lo), lo)
                self.hi[k] = max(self.hi.get(k, hi), hi)

    def constant_inputs(self) -> dict[str, float]:
        return {k: self.lo[k] for k in self.lo if self.lo[k] == self.hi[k]}


def _stats_of(ds):
    while ds is not None:
        if getattr(ds, "stats", None) is not None:
            return ds.stats
        ds = getattr(ds, "base", None)
    return None


def warn(msg: str) -> None:
    print(f"edgec: warning: {msg}", file=sys.stderr, flush=True)


def data_warnings(c) -> None:
    """A compile stage (after validate): warn about calibration data that cannot calibrate anything and
    about validation that ran on the calibration samples, and record both in the manifest."""
    notes = []
    stats = _stats_of(c.calib)
    if stats is not None and stats.samples:
        const = stats.constant_inputs()
        for name, v in const.items():
            notes.append(f"calibration data {c.calib.source}: input '{name}' is {v:g} in every element of all "
                         f"{stats.samples} samples; int8 ranges from it are meaningless: calibrate on real inputs")
    if c.val is None and c.calib is not None:
        notes.append("validated on the calibration samples (no --val given): errors outside them go unseen; "
                     "pass --val with held-out data")
    for n in notes:
        warn(n)
    if notes and c.manifest is not None:
        c.manifest["warnings"] = notes
