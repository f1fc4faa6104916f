"""Issue 17's caches (core/cache.py and its users): a re-run reuses work, byte for byte, and a change
to anything the result depends on is a miss. Each test has its own EDGEC_CACHE_DIR."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgec
from edgec.core import cache
from edgec.core.data import ArrayDataset
from edgec.core.reference_cache import CachedReference


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(d))
    monkeypatch.delenv("EDGEC_CACHE", raising=False)
    return d


def test_arrays_and_blobs_round_trip_and_reject_foreign_files(cache_dir):
    k = cache.key("t", b"model", {"a": 1})
    assert cache.load_arrays("t", k) is None
    cache.save_arrays("t", k, {"x": np.arange(3, dtype=np.float32)})
    np.testing.assert_array_equal(cache.load_arrays("t", k)["x"], np.arange(3, dtype=np.float32))
    other = cache.key("t", b"model", {"a": 2})
    assert other != k and cache.load_arrays("t", other) is None
    # a file under k's name holding another key's arrays (or garbage) is a miss, never an error
    (cache_dir / "t" / f"{other[:32]}.npz").write_bytes(b"not an npz")
    assert cache.load_arrays("t", other) is None
    cache.save_blob("b", k, b"payload", {"n": 1})
    assert cache.load_blob("b", k) == (b"payload", {"n": 1})
    (cache_dir / "b" / f"{k[:32]}.bin").write_bytes(b"payloaX")  # a changed blob fails its sha256
    assert cache.load_blob("b", k) is None


def test_cache_off(cache_dir, monkeypatch):
    monkeypatch.setenv("EDGEC_CACHE", "0")
    k = cache.key("t")
    cache.save_arrays("t", k, {"x": np.zeros(1)})
    assert cache.load_arrays("t", k) is None and not cache_dir.exists()


def test_reference_outputs_hit_per_sample(cache_dir, tiny_cnn_path):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    first = CachedReference(str(tiny_cnn_path), "sha-a")
    outs = [first.run({"input": x}) for x in xs]
    assert first.report() == {"hits": 0, "misses": 3}
    first.save()
    again = CachedReference(str(tiny_cnn_path), "sha-a")
    assert again.output_names == ["logits"] and again._runner is None  # no session needed for names
    for x, o in zip(xs, outs):
        np.testing.assert_array_equal(again.run({"input": x})["logits"], o["logits"])
    changed = xs[0].copy()
    changed[0, 0, 0, 0] += 1e-3
    again.run({"input": changed})  # one changed pixel: computed, not answered from another sample
    assert again.report() == {"hits": 3, "misses": 1}
    assert again._runner is not None
    other_model = CachedReference(str(tiny_cnn_path), "sha-b")
    other_model.run({"input": xs[0]})
    assert other_model.report()["misses"] == 1


def _data(n=16, seed=1):
    rng = np.random.default_rng(seed)
    return ArrayDataset({"input": rng.uniform(0, 1, (n, 3, 16, 16)).astype(np.float32)})


def test_int8_rerun_hits_and_is_identical(cache_dir, tiny_cnn_path, tmp_path):
    from conftest import build_tiny_cnn
    from edgec.core.quantization import quantize

    model = build_tiny_cnn()
    a = quantize(model, "int8", calibration=_data(), progress=False)
    b = quantize(model, "int8", calibration=_data(), progress=False)
    for what in ("weight_rounding", "bias_correction"):
        assert a.report[what]["cache"] == "miss" and b.report[what]["cache"] == "hit", what
    assert a.model.SerializeToString(deterministic=True) == b.model.SerializeToString(deterministic=True)
    # other data, or another flavour: new GPTQ tables and deltas
    c = quantize(model, "int8", calibration=_data(seed=2), progress=False)
    assert c.report["weight_rounding"]["cache"] == "miss"
    from edgec.core.backend import QuantFlavour
    d = quantize(model, "int8", calibration=_data(), flavour=QuantFlavour(reduce_range=True), progress=False)
    assert d.report["weight_rounding"]["cache"] == "miss"


def test_a_layer_kept_in_float_rounds_only_what_changed(cache_dir, tmp_path, monkeypatch):
    """GPTQ's integers and H are stored per layer: a compile that keeps a layer in float after a full one
    rounds nothing new, the full one after it rounds only the layer it lacked ("partial"), and both
    models are byte for byte the ones a cold cache makes."""
    from conftest import build_tiny_cnn
    from edgec.core.quantization import quantize, rounding

    model = build_tiny_cnn()
    det = lambda r: r.model.SerializeToString(deterministic=True)  # noqa: E731
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cold-a"))
    cold_keep = det(quantize(model, "int8", calibration=_data(), keep_fp32=["Gemm"], progress=False))
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cold-b"))
    cold_full = det(quantize(model, "int8", calibration=_data(), progress=False))
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(cache_dir))
    rounded = []
    real = rounding.gptq_round_groups
    monkeypatch.setattr(rounding, "gptq_round_groups", lambda w, *a, **k: rounded.append(w.shape) or real(w, *a, **k))

    full = quantize(model, "int8", calibration=_data(), progress=False)
    n_layers, rounded[:] = len(rounded), []
    keep = quantize(model, "int8", calibration=_data(), keep_fp32=["Gemm"], progress=False)
    assert n_layers == 3 and rounded == [] and keep.report["weight_rounding"]["cache"] == "hit"
    assert det(keep) == cold_keep and det(full) == cold_full

    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "keep-first"))
    quantize(model, "int8", calibration=_data(), keep_fp32=["Gemm"], progress=False)
    rounded[:] = []
    again = quantize(model, "int8", calibration=_data(), progress=False)
    wr = again.report["weight_rounding"]
    assert len(rounded) == 1 and wr["cache"] == "partial" and wr["moments_cache"] == "miss"  # only the Gemm's H asked
    assert det(again) == cold_full


def test_gptq_moments_are_shared_across_flavours_and_exact(cache_dir, monkeypatch):
    """GPTQ's H depends on the FP32 model and data only: another backend's flavour (s8 symmetric
    activations, 8-bit weights, as TVM asks) reuses the u8/7-bit compile's H and rounds to exactly the
    integers it would have computed without any cache."""
    from conftest import build_tiny_cnn
    from edgec.core.backend import QuantFlavour
    from edgec.core.quantization import quantize

    model = build_tiny_cnn()
    ort_like = QuantFlavour(reduce_range=True)
    tvm_like = QuantFlavour(activation_dtype="int8", symmetric_activations=True)
    a = quantize(model, "int8", calibration=_data(), flavour=ort_like, progress=False)
    b = quantize(model, "int8", calibration=_data(), flavour=tvm_like, progress=False)
    assert a.report["weight_rounding"]["moments_cache"] == "miss"
    assert b.report["weight_rounding"]["cache"] == "miss" and b.report["weight_rounding"]["moments_cache"] == "hit"
    assert b.report["calibration"]["cache"] == "hit"
    monkeypatch.setenv("EDGEC_CACHE", "0")
    fresh = quantize(model, "int8", calibration=_data(), flavour=tvm_like, progress=False)
    assert fresh.model.SerializeToString(deterministic=True) == b.model.SerializeToString(deterministic=True)


def test_gptq_is_the_default_and_nearest_is_an_option(cache_dir, tiny_cnn_path, tiny_data, tmp_path):
    art = edgec.compile(tiny_cnn_path, "onnxruntime", "int8", calibration=tiny_data, validation=tiny_data,
                        output=tmp_path / "a")
    assert art.manifest["quantization"]["weight_rounding"]["method"] == "gptq"
    near = edgec.compile(tiny_cnn_path, "onnxruntime", "int8", calibration=tiny_data, validation=tiny_data,
                         output=tmp_path / "b", options={"weight_rounding": "nearest"})
    assert "weight_rounding" not in near.manifest["quantization"]
    with pytest.raises(edgec.core.errors.InputError, match="weight_rounding"):
        edgec.compile(tiny_cnn_path, "onnxruntime", "int8", calibration=tiny_data, output=tmp_path / "c",
                      options={"weight_rounding": "bogus"})


def test_compile_rerun_reuses_optimizer_and_reference(cache_dir, tiny_cnn_path, tiny_data, tmp_path):
    kw = dict(calibration=tiny_data, validation=tiny_data)
    a = edgec.compile(tiny_cnn_path, "onnxruntime", "int8", output=tmp_path / "a", **kw).manifest
    b = edgec.compile(tiny_cnn_path, "onnxruntime", "int8", output=tmp_path / "b", **kw).manifest
    assert a["passes"]["cache"] == "miss" and b["passes"]["cache"] == "hit"
    ra = a["validation"]["reference_cache"]
    assert ra["hits"] == 0 and ra["misses"] == 32 and ra.get("ahead", 0) <= 32  # ahead: by the prefetch thread
    assert b["validation"]["reference_cache"] == {"hits": 32, "misses": 0}
    assert a["files"]["model.onnx"]["sha256"] == b["files"]["model.onnx"]["sha256"]
    for k in ("cosine", "max_abs_err", "top1_agreement"):
        assert a["validation"][k] == b["validation"][k]
    # another precision of the same model: the optimizer's work and the reference are shared
    c = edgec.compile(tiny_cnn_path, "onnxruntime", "fp32", output=tmp_path / "c", validation=tiny_data).manifest
    assert c["passes"]["cache"] == "hit" and c["validation"]["reference_cache"]["misses"] == 0


def test_edited_model_misses(cache_dir, tmp_path, tiny_data):
    from conftest import build_tiny_cnn

    kw = dict(validation=tiny_data)
    p1, p2 = tmp_path / "m1.onnx", tmp_path / "m2.onnx"
    onnx.save(build_tiny_cnn(seed=0), str(p1))
    onnx.save(build_tiny_cnn(seed=3), str(p2))
    edgec.compile(p1, "onnxruntime", "fp32", output=tmp_path / "a", **kw)
    m = edgec.compile(p2, "onnxruntime", "fp32", output=tmp_path / "b", **kw).manifest
    assert m["passes"]["cache"] == "miss" and m["validation"]["reference_cache"]["hits"] == 0


def test_prefetched_reference_is_validations_own(cache_dir, tiny_cnn_path, tiny_data, tmp_path):
    """The prefetch thread's outputs are the ones validation computes, it runs at nice 19 without
    touching the caller's priority, and validation computes only what it did not reach."""
    import os
    import threading

    from edgec.core import reference_prefetch as rp
    from edgec.core.stages import open_data
    from edgec.core.validate import ReferenceRunner, sample_feeds

    possible = []
    probe = threading.Thread(target=lambda: possible.append(rp._lower_priority()))  # a throwaway thread
    probe.start()
    probe.join()
    if not possible[0]:
        pytest.skip("this OS cannot lower one thread's priority: the prefetch is not started here")
    model = onnx.load(str(tiny_cnn_path))
    data = open_data(str(tiny_data), model, None, "validation")
    seen = {}
    own = rp._lower_priority

    def lower_and_look():
        ok = own()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return ok

    rp._lower_priority, before = lower_and_look, os.getpriority(os.PRIO_PROCESS, 0)
    try:
        ref = CachedReference(str(tiny_cnn_path), "sha-p")
        ahead = rp.ReferencePrefetch(ref, str(tiny_cnn_path), lambda: open_data(str(tiny_data), model, None, "v"), None)
        ahead._thread.join(60)
    finally:
        rp._lower_priority = own
    assert seen["nice"] == 19 and os.getpriority(os.PRIO_PROCESS, 0) == before
    got = ahead.finish()
    assert got is ref and ref.ahead == 32 and ahead.error is None
    plain = ReferenceRunner(str(tiny_cnn_path))
    for sample in data:
        f = sample_feeds(sample)
        np.testing.assert_array_equal(ref.run(f)["logits"], plain.run(f)["logits"])
    assert ref.report() == {"hits": 0, "misses": 32, "ahead": 32} and ref._runner is None  # no session of its own


def test_validation_waits_for_the_running_prefetch(cache_dir, tiny_cnn_path, tiny_data, monkeypatch):
    """Validation takes the prefetch over while it still runs: a sample it has not reached yet is
    waited for, not computed twice, and a prefetch that ends early (here: after 5 samples) leaves the
    rest to validation's own session."""
    import threading

    from edgec.core import reference_prefetch as rp
    from edgec.core.stages import open_data
    from edgec.core.validate import ReferenceRunner, sample_feeds

    monkeypatch.setattr(rp, "_lower_priority", lambda: True)  # the waiting, not the priority, is tested here
    model = onnx.load(str(tiny_cnn_path))
    plain = ReferenceRunner(str(tiny_cnn_path))
    samples = [sample_feeds(s) for s in open_data(str(tiny_data), model, None, "v")]
    real = CachedReference.compute_ahead
    for limit, want in ((None, {"hits": 0, "misses": 32, "ahead": 32}), (5, {"hits": 0, "misses": 32, "ahead": 5})):
        gate, made = threading.Event(), []  # the prefetch starts only once validation is already waiting

        def gated(self, feeds, runner, limit=limit, gate=gate, made=made):
            gate.wait(10)
            made.append(1)
            return (limit is None or len(made) <= limit) and real(self, feeds, runner)
        monkeypatch.setattr(CachedReference, "compute_ahead", gated)
        ref = CachedReference(str(tiny_cnn_path), f"sha-wait-{limit}")
        ahead = rp.ReferencePrefetch(ref, str(tiny_cnn_path), lambda: open_data(str(tiny_data), model, None, "v"), None)
        got = ahead.handover()
        threading.Timer(0.3, gate.set).start()
        for f in samples:
            np.testing.assert_array_equal(got.run(f)["logits"], plain.run(f)["logits"])
        ahead.finish()
        assert ref.report() == want and ahead.error is None
        assert (ref._runner is None) == (limit is None)  # its own session only for what the prefetch left


def test_prefetch_stops_where_outputs_are_not_kept(tiny_cnn_path):
    """A sequence output is not stored, so the prefetch's work on it would be lost and validation would
    wait for a pass it cannot use: compute_ahead says stop (validation then computes its own)."""
    class SequenceOut:
        output_names, runtime = ["logits"], "onnxruntime"

        def run(self, feeds):
            return {"logits": [np.zeros(2, np.float32)]}

    ref = CachedReference(str(tiny_cnn_path), "sha-seq")
    assert ref.compute_ahead({"input": np.zeros((1, 3, 16, 16), np.float32)}, SequenceOut()) is False
    assert ref.ahead == 0 and not ref._new


def test_prefetch_is_stopped_by_a_failed_compile(cache_dir, tiny_cnn_path, tiny_data, tmp_path):
    import threading

    with pytest.raises(edgec.core.errors.InputError):
        edgec.compile(tiny_cnn_path, "onnxruntime", "int8", calibration=tmp_path / "missing.npz",
                      validation=tiny_data, output=tmp_path / "a")
    bad = tmp_path / "bad_calib.npz"  # a wrong shape: found while calibrating, after the prefetch started
    np.savez(bad, input=np.zeros((4, 3, 8, 8), np.float32))
    started = []
    monkey = pytest.MonkeyPatch()
    from edgec.core import reference_prefetch as rp
    real = rp.ReferencePrefetch.__init__
    monkey.setattr(rp.ReferencePrefetch, "__init__", lambda self, *a: (started.append(1), real(self, *a))[1])
    try:
        with pytest.raises(edgec.core.errors.InputError, match="shape"):
            edgec.compile(tiny_cnn_path, "onnxruntime", "int8", calibration=bad, validation=tiny_data,
                          output=tmp_path / "b")
    finally:
        monkey.undo()
    assert started == [1]
    assert not [t for t in threading.enumerate() if t.name == "edgec-reference-prefetch"]
    assert not (tmp_path / "b").exists()


def test_a_validation_set_the_store_covers_is_not_read_twice(cache_dir, tiny_cnn_path, tiny_data, tmp_path, monkeypatch):
    """Once a compile found or stored the reference for every sample of a --val file, the next compile
    starts no prefetch pass over it (which would decode and hash every sample only to find it stored);
    a rewritten file is read again. The weights' coded size is remembered by the lowered model's bytes."""
    import os

    from edgec.core import reference_prefetch as rp
    from edgec.core.compression import entropy

    started = []

    class Counted(rp.ReferencePrefetch):
        def __init__(self, *a, **k):
            started.append(1)
            super().__init__(*a, **k)
    monkeypatch.setattr(rp, "ReferencePrefetch", Counted)
    kw = dict(validation=str(tiny_data))
    a = edgec.compile(tiny_cnn_path, "onnxruntime", "fp32", output=tmp_path / "a", **kw).manifest
    assert len(started) == 1 and a["validation"]["reference_cache"]["misses"] == 32
    real_size_report = entropy.size_report
    monkeypatch.setattr(entropy, "size_report", lambda *a, **k: pytest.fail("the same model's weights coded again"))
    b = edgec.compile(tiny_cnn_path, "onnxruntime", "fp32", output=tmp_path / "b", **kw).manifest
    assert len(started) == 1 and b["validation"]["reference_cache"] == {"hits": 32, "misses": 0}
    assert b["size"]["weights"] == a["size"]["weights"] and b["validation"]["cosine"] == a["validation"]["cosine"]
    monkeypatch.setattr(entropy, "size_report", real_size_report)
    rng = np.random.default_rng(9)
    np.savez(tiny_data, input=rng.uniform(0, 1, (32, 3, 16, 16)).astype(np.float32), labels=rng.integers(0, 10, 32))
    st = os.stat(tiny_data)
    os.utime(tiny_data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new file even on a coarse clock
    c = edgec.compile(tiny_cnn_path, "onnxruntime", "fp32", output=tmp_path / "c", **kw).manifest
    assert len(started) == 2 and c["validation"]["reference_cache"]["hits"] == 0


def test_an_incomplete_store_is_not_noted_as_covering(cache_dir, tiny_cnn_path, tiny_data, monkeypatch):
    """Past the size cap the store keeps only some samples: then the next compile must prefetch again."""
    from edgec.core import reference_cache as rc

    monkeypatch.setattr(rc, "MAX_BYTES", 5 * 40)  # five samples' logits (10 float32 each, 40 bytes)
    ref = CachedReference(str(tiny_cnn_path), "sha-cap")
    rng = np.random.default_rng(0)
    for _ in range(8):
        ref.run({"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)})
    ref.save()
    assert not ref.complete()
    full = CachedReference(str(tiny_cnn_path), "sha-full")
    full.run({"input": np.zeros((1, 3, 16, 16), np.float32)})
    full.save()
    assert full.complete()
