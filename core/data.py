"""Calibration/validation data: one streaming `Dataset` interface over every input format.

Formats: .npz (keys = model input names, first axis = samples, optional `labels`), a folder of
.npy/.npz files, a folder of images, and JPEG packs (`jpeg` blob + `offsets` + `labels`, the format of
../shared/data/imagenet_*_jpeg.npz). Images go through a `Preprocess` spec. Pickles are never loaded
(`allow_pickle=False` everywhere) and samples are decoded one at a time, so 1,000 ImageNet crops never
sit in memory together.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np


@dataclass
class Sample:
    feeds: dict[str, np.ndarray]  # each array has a leading batch axis of 1
    label: int | None = None


class Dataset:
    """Iterable of `Sample`s with a length and a content fingerprint (for caches and manifests)."""

    source: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        raise NotImplementedError

    @property
    def has_labels(self) -> bool:
        return False

    def fingerprint(self) -> str:
        """sha256 over the samples as the model sees them (after preprocessing)."""
        h = hashlib.sha256()
        for s in self:
            for k in sorted(s.feeds):
                a = np.ascontiguousarray(s.feeds[k])
                h.update(k.encode()); h.update(str(a.dtype).encode()); h.update(str(a.shape).encode())
                h.update(a.tobytes())
            h.update(str(s.label).encode())
        return h.hexdigest()

    def take(self, n: int | None) -> "Dataset":
        return self if n is None or n >= len(self) else _Take(self, n)


class _Take(Dataset):
    def __init__(self, base: Dataset, n: int):
        self.base, self.n, self.source = base, n, base.source

    def __len__(self):
        return self.n

    def __iter__(self):
        for i, s in enumerate(self.base):
            if i >= self.n:
                return
            yield s

    @property
    def has_labels(self):
        return self.base.has_labels


class ArrayDataset(Dataset):
    """In-memory arrays: {input name: array with samples on axis 0}, optional labels."""

    def __init__(self, arrays: Mapping[str, np.ndarray], labels: np.ndarray | None = None, source: str = "<arrays>"):
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        lens = {len(v) for v in self.arrays.values()}
        if len(lens) != 1:
            from edgec.core.errors import InputError
            raise InputError(f"data {source}: inputs have different sample counts {sorted(lens)}; "
                             "give every input the same first-axis length")
        self.n = lens.pop()
        self.labels = None if labels is None else np.asarray(labels).reshape(-1)
        self.source = source
        if self.labels is not None and (len(self.labels) != self.n or self.labels.dtype.kind not in "iub"):
            from edgec.core.errors import InputError
            what = (f"{len(self.labels)} labels for {self.n} samples" if len(self.labels) != self.n
                    else f"labels of dtype {self.labels.dtype}")
            raise InputError(f"data {source}: {what}; give one integer class id per sample under 'labels'")

    def __len__(self):
        return self.n

    @property
    def has_labels(self):
        return self.labels is not None

    def __iter__(self):
        for i in range(self.n):
            yield Sample({k: v[i:i + 1] for k, v in self.arrays.items()},
                         None if self.labels is None else int(self.labels[i]))


class SampleList(Dataset):
    """Each sample is a full set of input tensors exactly as the model takes them: no sample axis is
    added or taken away, so a sample may hold a batch > 1, a scalar, or inputs of different first dims.
    The in-memory form of the `.npz` per-sample keys `<i>/<input name>` (see `open_dataset`)."""

    def __init__(self, samples, labels=None, source: str = "<samples>"):
        self.samples = [dict(s) for s in samples]
        self.labels = None if labels is None else [None if v is None else int(v) for v in labels]
        self.source = source

    def __len__(self):
        return len(self.samples)

    @property
    def has_labels(self):
        return self.labels is not None

    def __iter__(self):
        for i, s in enumerate(self.samples):
            yield Sample(s, None if self.labels is None else self.labels[i])


_PER_SAMPLE_KEY = re.compile(r"^(\d+)/(.+)$")


def _per_sample(z, labels, src: str) -> "SampleList | None":
    """`.npz` keys `<i>/<input name>` (e.g. `0/images`, `0/scale`, `1/images`...): sample i's full tensors."""
    keys = [k for k in z.files if k not in LABEL_KEYS]
    matched = [_PER_SAMPLE_KEY.match(k) for k in keys]
    if not keys or not any(matched):
        return None
    if not all(matched):
        bad = next(k for k, m in zip(keys, matched) if not m)
        raise _input_error(f"data {src} mixes per-sample keys ('<i>/<input>') with '{bad}'; use one layout")
    samples: dict[int, dict] = {}
    for k, m in zip(keys, matched):
        samples.setdefault(int(m.group(1)), {})[m.group(2)] = z[k]
    order = sorted(samples)
    return SampleList([samples[i] for i in order], None if labels is None else np.ravel(labels)[: len(order)], src)


# ---------------------------------------------------------------------------------------------------------
# Opening user data. Everything below checks what it yields against the model's input specs, so a wrong
# name, shape or dtype fails with one line that names the input and the fix, not deep inside a runtime.

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
LABEL_KEYS = ("labels", "label")


def _input_error(msg: str):
    from edgec.core.errors import InputError
    return InputError(msg)


def check_feeds(feeds: Mapping[str, np.ndarray], specs, source: str, index: int) -> None:
    names = [s.name for s in specs]
    for s in specs:
        if s.name not in feeds:
            raise _input_error(f"data {source} has no array for model input '{s.name}' (it has: "
                               f"{', '.join(sorted(feeds)) or 'nothing'}); name the arrays after the model "
                               f"inputs ({', '.join(names)})")
        a = feeds[s.name]
        if not hasattr(a, "dtype"):  # a sequence or an empty optional: the runtime checks its elements
            continue
        if str(a.dtype) != s.dtype:
            raise _input_error(f"data {source}: input '{s.name}' is {a.dtype} but the model expects {s.dtype}; "
                               "convert the data or pass --preprocess for raw images")
        ok = a.ndim == len(s.shape) and all(not isinstance(d, int) or d <= 0 or d == n for d, n in zip(s.shape, a.shape))
        if not ok:
            raise _input_error(f"data {source}: sample {index} of input '{s.name}' has shape {list(a.shape)} but the "
                               f"model expects {list(s.shape)}; fix the data or pass --preprocess to resize images")
    extra = set(feeds) - set(names)
    if extra:
        raise _input_error(f"data {source} has array '{sorted(extra)[0]}' that is not a model input "
                           f"(inputs: {', '.join(names)}; labels go under 'labels')")


class CheckedDataset(Dataset):
    """Wraps a dataset and checks every sample against the model inputs as it streams by."""

    def __init__(self, base: Dataset, specs):
        from edgec.core.data_guard import Stats
        self.base, self.specs, self.source = base, list(specs), base.source
        self.stats = Stats()

    def __len__(self):
        return len(self.base)

    @property
    def has_labels(self):
        return self.base.has_labels

    def __iter__(self):
        from edgec.core.data_guard import Stats, check_finite
        stats = Stats()
        for i, s in enumerate(self.base):
            check_feeds(s.feeds, self.specs, self.source, i)
            check_finite(s.feeds, self.source, i)
            stats.update(s.feeds)
            yield s
        self.stats = stats  # a complete pass: what the degenerate-data warning reads


class ImageArrayDataset(Dataset):
    """uint8 images (N,H,W) or (N,H,W,C) run through a Preprocess for a single-input model."""

    def __init__(self, images, labels, spec, preprocess, source):
        self.images, self.labels, self.spec, self.pp, self.source = images, labels, spec, preprocess, source

    def __len__(self):
        return len(self.images)

    @property
    def has_labels(self):
        return self.labels is not None

    def __iter__(self):
        for i in range(len(self.images)):
            x = self.pp.apply(np.asarray(self.images[i]), self.spec.shape, self.spec.dtype)
            yield Sample({self.spec.name: x}, None if self.labels is None else int(self.labels[i]))


DECODED_MB = int(os.environ.get("EDGEC_DECODED_MB", "256"))


class JpegPackDataset(Dataset):
    """The `jpeg` + `offsets` (+ `labels`) pack of ../shared/data: decoded one image at a time."""

    def __init__(self, z, spec, preprocess, source):
        self.blob, self.offsets = z["jpeg"], z["offsets"]
        self.labels = z["labels"] if "labels" in z.files else None
        self.spec, self.pp, self.source = spec, preprocess, source

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def has_labels(self):
        return self.labels is not None

    def __iter__(self):
        import io

        from PIL import Image

        # An int8 compile reads its calibration samples four times (fingerprint, calibration, GPTQ, bias
        # correction): from the second pass on, decoded samples are kept up to DECODED_MB, so the later
        # passes decode nothing (issue 17); data read once (validation) holds no memory.
        memo = self.__dict__.setdefault("_decoded", {})
        keep = self.__dict__.get("_passes", 0) >= 1
        self._passes = self.__dict__.get("_passes", 0) + 1
        for i in range(len(self)):
            x = memo.get(i)
            if x is None:
                raw = self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()
                img = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
                x = self.pp.apply(img, self.spec.shape, self.spec.dtype)
                if keep and (len(memo) + 1) * x.nbytes <= DECODED_MB << 20:
                    x.flags.writeable = False  # shared between passes: nobody may change it in place
                    memo[i] = x
            yield Sample({self.spec.name: x}, None if self.labels is None else int(self.labels[i]))


class ImageFolderDataset(Dataset):
    """Images in a folder; with one sub-folder per class (sorted names = label ids), labels too."""

    def __init__(self, root, spec, preprocess, source):
        from pathlib import Path

        root = Path(root)
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        files: list[tuple] = [(p, None) for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_EXT]
        for ci, c in enumerate(classes):
            files += [(p, ci) for p in sorted((root / c).iterdir()) if p.suffix.lower() in IMAGE_EXT]
        self.files, self.spec, self.pp, self.source = files, spec, preprocess, source
        self._labels = bool(classes) and all(lbl is not None for _, lbl in files)

    def __len__(self):
        return len(self.files)

    @property
    def has_labels(self):
        return self._labels

    def __iter__(self):
        from PIL import Image

        for path, label in self.files:
            try:
                img = np.asarray(Image.open(path).convert("RGB"))
            except OSError as e:
                raise _input_error(f"image {path} cannot be decoded ({e}); remove or replace it") from None
            yield Sample({self.spec.name: self.pp.apply(img, self.spec.shape, self.spec.dtype)}, label)


class NpyFolderDataset(Dataset):
    """A folder of .npy (single-input models) / .npz files; each holds one sample or a stack of samples."""

    def __init__(self, files, specs, source):
        self.files, self.specs, self.source = files, list(specs), source
        self._counts = [self._count(f) for f in files]

    def _arrays(self, f) -> tuple[dict, np.ndarray | None]:
        from edgec.core.data_guard import check_npy, check_npz
        (check_npy if f.suffix == ".npy" else check_npz)(f)
        if f.suffix == ".npy":
            if len(self.specs) != 1:
                raise _input_error(f"{f}: .npy files only work for single-input models; use .npz with one key per input")
            return {self.specs[0].name: np.load(f, allow_pickle=False)}, None
        with np.load(f, allow_pickle=False) as z:
            labels = next((z[k] for k in LABEL_KEYS if k in z.files), None)
            return {k: z[k] for k in z.files if k not in LABEL_KEYS}, labels

    def _count(self, f) -> int:
        arrays, _ = self._arrays(f)
        s = self.specs[0]
        a = arrays.get(s.name)
        if a is None:
            return 1  # check_feeds reports the missing name
        return a.shape[0] if a.ndim == len(s.shape) else 1

    def __len__(self):
        return sum(self._counts)

    @property
    def has_labels(self):
        return False

    def __iter__(self):
        for f in self.files:
            arrays, labels = self._arrays(f)
            stacked = any(a.ndim == len(s.shape) for s in self.specs for k, a in arrays.items() if k == s.name)
            if not stacked:
                yield Sample({k: a[None] for k, a in arrays.items()}, None if labels is None else int(np.ravel(labels)[0]))
                continue
            n = next(iter(arrays.values())).shape[0]
            for i in range(n):
                yield Sample({k: a[i:i + 1] for k, a in arrays.items()}, None if labels is None else int(labels[i]))


def open_dataset(path, inputs, preprocess=None) -> Dataset:
    """Open calibration/validation data for a model whose inputs are `inputs` (a list of TensorSpec).

    `preprocess` (a spec string or Preprocess) is needed for raw images: image folders, JPEG packs and
    uint8 image arrays. The result is checked against the model inputs sample by sample as it streams.
    """
    from pathlib import Path

    from edgec.core.preprocess import Preprocess

    p = Path(path)
    pp = Preprocess.parse(preprocess, _plugin_presets()) if isinstance(preprocess, str) else preprocess
    src = str(p)
    if not p.exists():
        raise _input_error(f"data not found: {p} (give an .npz, a folder of .npy/.npz, an image folder or a JPEG pack)")
    specs = list(inputs)
    if p.is_dir():
        arrays = sorted(f for f in p.iterdir() if f.suffix in (".npy", ".npz"))
        if arrays:
            ds = NpyFolderDataset(arrays, specs, src)
        elif not any(f.suffix.lower() in IMAGE_EXT for f in p.rglob("*")):
            raise _input_error(f"data folder {p} holds no .npy/.npz files or images; give a folder with data in it")
        else:
            _need_single(specs, src, "an image folder")
            _need_pp(pp, src, "an image folder")
            ds = ImageFolderDataset(p, specs[0], pp, src)
        if len(ds) == 0:
            raise _input_error(f"data folder {p} holds no .npy/.npz files or images")
        return CheckedDataset(ds, specs)
    from edgec.core.data_guard import check_npy, check_npz, sniff
    kind = sniff(p)
    if kind == "npy" and p.suffix != ".npy":
        raise _input_error(f"{p} is a .npy array, not an .npz; rename it to .npy")
    (check_npy if kind == "npy" else check_npz)(p)
    try:
        if kind == "npy":
            _need_single(specs, src, "a .npy file")
            arrays = {specs[0].name: np.load(p, allow_pickle=False)}
            labels = None
            z = None
        else:
            z = np.load(p, allow_pickle=False)
            if not hasattr(z, "files"):
                raise _input_error(f"{p} is a .npy array, not an .npz; rename it to .npy")
            arrays = None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise _input_error(f"{p} contains pickled objects, which edgec never loads; save plain numeric arrays") from None
        raise _input_error(f"{p} is not a readable .npz/.npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise _input_error(f"{p} is not a readable .npz/.npy file ({type(e).__name__}); re-create it") from None
    if z is not None:
        z = _NoPickleNpz(z, src)
        if "jpeg" in z.files and "offsets" in z.files:
            _need_single(specs, src, "a JPEG pack")
            _need_pp(pp, src, "a JPEG pack")
            return CheckedDataset(JpegPackDataset(z, specs[0], pp, src), specs)
        labels = next((z[k] for k in LABEL_KEYS if k in z.files), None)
        per_sample = _per_sample(z, labels, src)
        if per_sample is not None:
            return CheckedDataset(per_sample, specs)
        # String arrays (class names, wnids) are metadata, not inputs.
        keys = [k for k in z.files if k not in LABEL_KEYS and z[k].dtype.kind not in "USO"]
        names = {s.name for s in specs}
        if len(specs) == 1 and len(keys) == 1 and keys[0] not in names:
            # One unnamed array for a one-input model (e.g. `images` in fashion_mnist_test.npz).
            arrays = {specs[0].name: z[keys[0]]}
        else:
            arrays = {k: z[k] for k in keys}
    if len(specs) == 1 and specs[0].name in arrays:
        a, s = arrays[specs[0].name], specs[0]
        if pp is not None and (a.dtype == np.uint8 and s.dtype != "uint8" or a.ndim != len(s.shape)):
            return CheckedDataset(ImageArrayDataset(a, labels, s, pp, src), specs)
    for s in specs:
        a = arrays.get(s.name)
        if a is not None and a.ndim != len(s.shape):
            raise _input_error(f"data {src}: array '{s.name}' has rank {a.ndim} ({list(a.shape)}) but the model input "
                               f"is rank {len(s.shape)} {list(s.shape)}; stack samples on axis 0, or pass --preprocess "
                               "for raw images")
    return CheckedDataset(ArrayDataset(arrays, labels, src), specs)


class _NoPickleNpz:
    """np.load(npz) reads members lazily, so the pickle refusal surfaces at access: turn it into an InputError."""

    def __init__(self, z, src):
        self.z, self.src, self.files = z, src, z.files

    def __getitem__(self, key):
        try:
            return self.z[key]
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise _input_error(f"{self.src} member '{key}' holds pickled objects, which edgec never loads; "
                                   "save plain numeric arrays") from None
            raise


def _need_single(specs, src, what):
    if len(specs) != 1:
        raise _input_error(f"data {src} is {what}, which only feeds single-input models; this model has "
                           f"{len(specs)} inputs: use an .npz with one key per input")


def _need_pp(pp, src, what):
    if pp is None:
        raise _input_error(f"data {src} is {what} of raw images: pass --preprocess (a preset like 'imagenet', "
                           "'efficientnet-lite', 'squeezenet-bgr', 'unit', or key=value pairs)")


def _plugin_presets() -> dict:
    try:
        from edgec.core.registry import preprocess_presets
        return preprocess_presets()
    except Exception:  # a broken plugin must not break data loading
        return {}
