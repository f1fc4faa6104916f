"""Benchmark data loading: the real datasets under ../shared, as edgec Datasets."""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from edgec.core.data import ArrayDataset, Dataset, Sample

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PREPROCESS = {"efficientnet_lite0": "efficientnet-lite", "squeezenet1_1": "squeezenet-bgr"}


class JpegPack(Dataset):
    """Streaming decode of a JPEG pack (fallback while edgec.core.data.open_dataset is not available)."""

    def __init__(self, path: Path, preset: str, start: int = 0, stop: int | None = None):
        z = np.load(path, allow_pickle=False)
        self.blob, self.offsets, self.all_labels = z["jpeg"], z["offsets"], z["labels"]
        self.start, self.stop = start, len(self.offsets) - 1 if stop is None else stop
        self.preset, self.source = preset, f"{path}[{start}:{self.stop}]"

    def __len__(self):
        return self.stop - self.start

    @property
    def has_labels(self):
        return True

    def _prep(self, img: np.ndarray) -> np.ndarray:
        x = img.astype(np.float32)
        if self.preset == "efficientnet-lite":
            x = (x / 255.0 - 0.498) / 0.502
        else:
            x = x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)

    def __iter__(self):
        from PIL import Image

        for i in range(self.start, self.stop):
            img = np.asarray(Image.open(io.BytesIO(self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes()))
                             .convert("RGB"))
            yield Sample({"input": self._prep(img)}, int(self.all_labels[i]))


def imagenet(split: str, model: str, start: int = 0, stop: int | None = None) -> Dataset:
    path = SHARED / "data" / f"imagenet_{split}_jpeg.npz"
    try:
        from edgec.core.data import open_dataset  # the lead's loader, once it lands
    except ImportError:
        return JpegPack(path, PREPROCESS[model], start, stop)
    import onnx

    from edgec.core.backend import TensorSpec

    m = onnx.load(SHARED / "models" / f"{model}.onnx", load_external_data=False)
    specs = [TensorSpec(i.name, "float32", tuple(d.dim_value for d in i.type.tensor_type.shape.dim))
             for i in m.graph.input]
    ds = open_dataset(path, specs, preprocess=PREPROCESS[model])
    return _Slice(ds, start, len(ds) if stop is None else stop)


class _Slice(Dataset):
    def __init__(self, base, start, stop):
        self.base, self.start, self.stop, self.source = base, start, stop, f"{base.source}[{start}:{stop}]"

    def __len__(self):
        return self.stop - self.start

    @property
    def has_labels(self):
        return self.base.has_labels

    def __iter__(self):
        for i, s in enumerate(self.base):
            if i >= self.stop:
                return
            if i >= self.start:
                yield s


def _idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_calib(n: int = 200) -> tuple[Dataset, str]:
    """Training images when Debian's dataset-fashion-mnist is installed (never calibrate on the test set)."""
    train = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    if train.exists():
        x = _idx(train)[:n]
        src = "fashion-mnist train[:%d]" % n
    else:
        x = np.load(SHARED / "data" / "fashion_mnist_test.npz")["images"][-n:]
        src = "fashion_mnist_test[-%d:] (train set not installed)" % n
    return ArrayDataset({"input": (x[:, None].astype(np.float32) / 255.0)}, source=src), src


def fashion_mnist_test(input_name: str = "input") -> tuple[np.ndarray, np.ndarray]:
    z = np.load(SHARED / "data" / "fashion_mnist_test.npz")
    return z["images"][:, None].astype(np.float32) / 255.0, z["labels"].astype(np.int64)
