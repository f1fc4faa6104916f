"""Every data format the CLI accepts, and preprocessing that matches ../shared/models/MODELS.md."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from edgec.core.backend import TensorSpec
from edgec.core.data import open_dataset
from edgec.core.errors import InputError
from edgec.core.preprocess import Preprocess

SPEC = [TensorSpec("input", "float32", ("N", 3, 16, 16))]


def _imgs(n, h=16, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_npz_named_arrays_with_labels(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x, labels=np.arange(5))
    ds = open_dataset(tmp_path / "d.npz", SPEC)
    samples = list(ds)
    assert len(ds) == 5 and ds.has_labels and [s.label for s in samples] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(samples[3].feeds["input"], x[3:4])


def test_npy_folder_single_and_stacked(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((3, 16, 16)).astype(np.float32))  # one sample
    np.save(tmp_path / "b.npy", rng.standard_normal((4, 3, 16, 16)).astype(np.float32))  # four samples
    ds = open_dataset(tmp_path, SPEC)
    assert len(ds) == 5 and all(s.feeds["input"].shape == (1, 3, 16, 16) for s in ds)


def test_image_folder_with_class_subfolders(tmp_path):
    for ci, cls in enumerate(["cat", "dog"]):
        (tmp_path / cls).mkdir()
        for j, img in enumerate(_imgs(2, 20, 24, seed=ci)):
            Image.fromarray(img).save(tmp_path / cls / f"{j}.png")
    ds = open_dataset(tmp_path, SPEC, "imagenet")
    samples = list(ds)
    assert ds.has_labels and [s.label for s in samples] == [0, 0, 1, 1]
    assert samples[0].feeds["input"].shape == (1, 3, 16, 16) and samples[0].feeds["input"].dtype == np.float32


def test_jpeg_pack_streams_and_matches_manual_decode(tmp_path):
    imgs = _imgs(3)
    blobs = []
    for img in imgs:
        b = io.BytesIO()
        Image.fromarray(img).save(b, format="JPEG", quality=95)
        blobs.append(np.frombuffer(b.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(tmp_path / "pack.npz", jpeg=np.concatenate(blobs), offsets=offsets, labels=np.array([7, 8, 9], np.int16),
             class_names=np.array(["a", "b"]))
    ds = open_dataset(tmp_path / "pack.npz", SPEC, "squeezenet-bgr")
    samples = list(ds)
    assert [s.label for s in samples] == [7, 8, 9]
    decoded = np.asarray(Image.open(io.BytesIO(blobs[1].tobytes())).convert("RGB")).astype(np.float32)
    manual = (decoded[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(samples[1].feeds["input"], manual, rtol=1e-6, atol=1e-4)


def test_jpeg_pack_decodes_once_from_its_second_pass(tmp_path, monkeypatch):
    """Calibration reads its samples four times; from the second pass on they come from memory
    (read-only, equal to a fresh decode), and one pass (validation) keeps nothing."""
    from PIL import Image as PILImage

    blobs = []
    for img in _imgs(3):
        b = io.BytesIO()
        Image.fromarray(img).save(b, format="JPEG", quality=95)
        blobs.append(np.frombuffer(b.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(tmp_path / "pack.npz", jpeg=np.concatenate(blobs), offsets=offsets)
    opened = []
    real_open = PILImage.open
    monkeypatch.setattr(PILImage, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    ds = open_dataset(tmp_path / "pack.npz", SPEC, "imagenet")
    first = [s.feeds["input"].copy() for s in ds]
    assert len(opened) == 3
    second = [s.feeds["input"] for s in ds]
    third = [s.feeds["input"] for s in ds]
    assert len(opened) == 6  # the first pass kept nothing, the second decoded and kept, the third decoded nothing
    for a, b, c in zip(first, second, third):
        np.testing.assert_array_equal(a, b)
        assert c is b and not c.flags.writeable


@pytest.mark.parametrize("preset,formula", [
    ("efficientnet-lite", lambda x: (x / 255 - 0.498) / 0.502),
    ("imagenet", lambda x: (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])),
    ("squeezenet-bgr", lambda x: x[..., ::-1] - np.array([103.939, 116.779, 123.68])),
])
def test_presets_match_models_md(preset, formula):
    img = _imgs(1)[0]
    got = Preprocess.parse(preset).apply(img, (1, 3, 16, 16))
    want = formula(img.astype(np.float64)).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_spec_overrides_and_nhwc():
    pp = Preprocess.parse("imagenet,layout=nhwc,scale=1/255")
    out = pp.apply(_imgs(1)[0], (1, 16, 16, 3))
    assert out.shape == (1, 16, 16, 3)


def test_gray_uint8_array_npz_like_fashion_mnist(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "f.npz", images=imgs, labels=np.arange(6), class_names=np.array(["x"] * 10))
    spec = [TensorSpec("input", "float32", ("N", 1, 28, 28))]
    samples = list(open_dataset(tmp_path / "f.npz", spec, "unit"))
    np.testing.assert_allclose(samples[2].feeds["input"][0, 0], imgs[2] / 255, rtol=1e-6)
    assert samples[2].label == 2


def test_bad_preprocess_spec():
    with pytest.raises(InputError, match="unknown --preprocess preset 'imagenett'"):
        Preprocess.parse("imagenett")
    with pytest.raises(InputError, match="unknown --preprocess key 'sclae'"):
        Preprocess.parse("sclae=2")


def test_fingerprint_changes_with_content(tmp_path):
    x = np.zeros((2, 3, 16, 16), np.float32)
    np.savez(tmp_path / "a.npz", input=x)
    np.savez(tmp_path / "b.npz", input=x + 1)
    a, b = open_dataset(tmp_path / "a.npz", SPEC), open_dataset(tmp_path / "b.npz", SPEC)
    assert a.fingerprint() != b.fingerprint() and a.fingerprint() == open_dataset(tmp_path / "a.npz", SPEC).fingerprint()


def test_shared_imagenet_pack_decodes():
    pack = shared_path("data", "imagenet_eval500_jpeg.npz")
    spec = [TensorSpec("input", "float32", (1, 3, 224, 224))]
    ds = open_dataset(pack, spec, "efficientnet-lite")
    first = next(iter(ds))
    assert len(ds) == 500 and first.feeds["input"].shape == (1, 3, 224, 224) and first.label is not None
