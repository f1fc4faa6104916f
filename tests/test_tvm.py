"""TVM backend: host compile/load/run/validate on tiny models, profiles, cross-compilation, errors.

The module fixture compiles once and the other tests reuse what they can (the per-function object cache
test compiles another model of the same graph into the same cache).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import build_tiny_cnn, build_two_input

pytest.importorskip("tvm", reason="TVM backend needs: pip install 'edgec[tvm]'")

import edgec  # noqa: E402
from edgec.core import profiles  # noqa: E402
from edgec.core.errors import BackendError, InputError, UnsupportedError  # noqa: E402


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Tuning records must not leak between tests (or into ~/.cache) and change what a test measures.
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edgec-cache"))


@pytest.fixture(scope="module")
def host_artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("tvm_host")
    src = d / "tiny.onnx"
    onnx.save(build_tiny_cnn(), str(src))
    with pytest.MonkeyPatch.context() as mp:  # module scope: set up before the autouse cache fixture
        mp.setenv("EDGEC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edgec-cache"))
        return src, edgec.compile(src, backend="tvm", precision="fp32", output=d / "art")


def _ort(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_profiles_are_package_data_with_tvm_targets():
    assert {"host", "rpi4", "jetson-orin"} <= set(profiles.names())
    rpi = profiles.load("rpi4")
    assert rpi["schema"] == 1 and rpi["version"]
    assert rpi["tvm_target"]["mcpu"] == "cortex-a72" and rpi["tvm_target"]["mtriple"].startswith("aarch64")
    assert profiles.load("jetson-orin")["fp16_arithmetic"] is True
    with pytest.raises(InputError, match="unknown target profile 'pi5'.*known: host, jetson-orin, rpi4"):
        profiles.load("pi5")


def test_host_fp32_compiles_validates_and_matches_onnxruntime(host_artifact):
    src, art = host_artifact
    m = art.manifest
    assert sorted(p.name for p in art.path.iterdir()) == ["manifest.json", "module.so", "tvm_meta.json"]
    assert m["validation"]["passed"] and m["validation"]["cosine"] > 0.99999
    assert m["toolchain"]["tvm"].startswith("0.27")
    info = m["backend_info"]
    assert info["validation_ran_on"] == "host" and info["library_machine"] == "x86-64" or info["library_machine"] == "aarch64"
    assert info["target"]["name"] == "host" and info["target"]["tvm_target"]["kind"] == "llvm"
    # Every fused function got a schedule (rules, or sampled for what no rule matches; no naive loops).
    s = info["schedules"]
    assert s["scheduled_functions"] == s["functions"] > 0
    # An independent run through edgec.load against onnxruntime on fresh inputs, batch of 1.
    x = np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32)
    runner = edgec.load(art.path)
    try:
        out = runner.run({"input": x})["logits"]
        stats = runner.benchmark({"input": x}, runs=5, warmup=1)
    finally:
        runner.close()
    np.testing.assert_allclose(out, _ort(src, {"input": x})[0], rtol=1e-4, atol=1e-4)
    assert stats.median_ms > 0 and stats.runs == 5


def _assert_matches_onnxruntime(artifact, src, seed: int) -> None:
    """The tiny CNN artifact's logits equal onnxruntime's on the source model."""
    x = np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)
    runner = edgec.load(artifact)
    try:
        np.testing.assert_allclose(runner.run({"input": x})["logits"], _ort(src, {"input": x})[0], rtol=1e-4, atol=1e-4)
    finally:
        runner.close()


def test_naive_schedule_and_two_inputs_through_the_plain_build(tmp_path, monkeypatch):
    """Also the fallback: when the per-function object build fails, `tvm.compile` builds the module."""
    from edgec.backends.tvm import objects

    def broken(*a, **k):
        raise RuntimeError("link error: duplicate symbol")

    monkeypatch.setattr(objects, "compile_module", broken)
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))  # a module cached by an earlier run would skip the build
    src = tmp_path / "two.onnx"
    onnx.save(build_two_input(), str(src))
    art = edgec.compile(src, backend="tvm", output=tmp_path / "a", options={"schedule": "naive", "batch": 3})
    assert art.manifest["backend_info"]["schedules"]["scheduled_functions"] == 0
    assert art.manifest["backend_info"]["build_cache"] == {"off": "link error: duplicate symbol"}
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal((3, 4)).astype(np.float32)}
    runner = edgec.load(art.path)
    np.testing.assert_allclose(runner.run(feeds)["y"], _ort(src, feeds)[0], rtol=1e-5, atol=1e-5)
    runner.close()


def test_function_objects_are_built_once_across_models_with_the_same_graph(tmp_path, monkeypatch, host_artifact):
    """Weights are the VM's constants, not part of the fused TIR functions: another model of the same
    architecture (here other weights) reuses every function's object file from the cache, and its
    artifact computes its own weights' outputs."""
    _, first = host_artifact
    bi = first.manifest["backend_info"]  # (the module itself may come from the cache: its build's report)
    info = bi.get("build_cache") or bi["module_cache"]["build"]["build_cache"]
    assert info["functions"] > 0 and info["built"] + info["hits"] == info["functions"]
    src = tmp_path / "other.onnx"
    onnx.save(build_tiny_cnn(seed=5), str(src))
    art = edgec.compile(src, backend="tvm", precision="fp32", output=tmp_path / "o")
    again = art.manifest["backend_info"]["build_cache"]
    assert again["functions"] == info["functions"] and again["hits"] == again["functions"] and again["built"] == 0
    _assert_matches_onnxruntime(art.path, src, seed=8)
    # With the cache off every function is built again (in parallel where there are cores).
    monkeypatch.setenv("EDGEC_CACHE", "0")
    off = edgec.compile(src, backend="tvm", precision="fp32", output=tmp_path / "n").manifest["backend_info"]["build_cache"]
    assert off["hits"] == 0 and off["built"] == off["functions"]


def test_a_recompile_with_nothing_changed_copies_the_cached_module(tmp_path, monkeypatch):
    """Same lowered model, target, options and code: module.so is the library built before, copied without
    TVM's import, passes or link, and still validated; another option builds (reusing the objects)."""
    from edgec.backends.tvm.backend import TvmBackend

    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "tiny.onnx"
    onnx.save(build_tiny_cnn(seed=2), str(src))
    first = edgec.compile(src, backend="tvm", precision="fp32", output=tmp_path / "a")
    assert first.manifest["backend_info"]["module_cache"] == {"hit": False}
    real_build = TvmBackend._build
    monkeypatch.setattr(TvmBackend, "_build", lambda *a, **k: pytest.fail("built although nothing changed"))
    again = edgec.compile(src, backend="tvm", precision="fp32", output=tmp_path / "b")
    info = again.manifest["backend_info"]
    assert info["module_cache"]["hit"] is True and info["schedules"] == first.manifest["backend_info"]["schedules"]
    assert "build_cache" not in info and info["module_cache"]["build"]["build_cache"]["functions"] > 0
    assert again.manifest["files"]["module.so"]["sha256"] == first.manifest["files"]["module.so"]["sha256"]
    assert again.manifest["validation"]["samples"] > 0 and again.manifest["validation"]["passed"]
    _assert_matches_onnxruntime(again.path, src, seed=3)
    monkeypatch.setattr(TvmBackend, "_build", real_build)
    other = edgec.compile(src, backend="tvm", precision="fp32", output=tmp_path / "c", options={"batch": 2})
    assert other.manifest["backend_info"]["module_cache"] == {"hit": False}


def test_int8_is_reported_as_fake_quantization(tmp_path, tiny_cnn_path, tiny_data):
    art = edgec.compile(tiny_cnn_path, backend="tvm", precision="int8", calibration=tiny_data, output=tmp_path / "q")
    rep = art.manifest["backend_info"]["int8"]
    assert art.manifest["validation"]["passed"]
    # Measured, not assumed: if a future TVM keeps integer operands, this test tells us to update the docs.
    assert rep["kernels_with_integer_operands"] == 0 and rep["kernels_with_float_operands"] >= 2
    assert "fake quantization" in rep["summary"]


def test_fp16_refused_on_targets_without_fp16(tiny_cnn_path, tmp_path):
    from edgec.backends.tvm import targets

    if targets.resolve("host").fp16_arithmetic:
        pytest.skip("this host has native FP16 arithmetic")
    with pytest.raises(UnsupportedError, match="no native FP16 arithmetic.*--target jetson-orin"):
        edgec.compile(tiny_cnn_path, backend="tvm", precision="fp16", output=tmp_path / "h")


@pytest.mark.parametrize("opts, match", [
    ({"target": "pi5"}, "unknown target profile 'pi5'"),
    ({"target": "{\"kind\": \"llvm\", \"mcpu\": "}, "not valid JSON"),
    ({"target": "{\"kind\": \"cuda\"}"}, "CPU targets only"),
    ({"schedule": "fast"}, "schedule='fast'"),
    ({"tune": "maybe"}, "tvm option tune='maybe' is not a boolean; use true or false"),
    ({"rpc": "board"}, "give HOST:PORT"),
    ({"bogus": 1}, "has no option 'bogus'"),
])
def test_bad_options_are_one_line_input_errors(tiny_cnn_path, tmp_path, opts, match):
    with pytest.raises(InputError, match=match) as e:
        edgec.compile(tiny_cnn_path, backend="tvm", output=tmp_path / "x", options=opts)
    assert "\n" not in str(e.value)


def test_raw_target_dict_is_accepted(tiny_cnn_path, tmp_path):
    from edgec.backends.tvm import targets

    t = {"kind": "llvm", "mcpu": "x86-64"}
    rt = targets.resolve(json.dumps(t))
    assert rt.name == "custom" and rt.runs_here and rt.cross_cc is None
    if targets.host_arch() != "x86_64":
        pytest.skip("the dict names an x86 CPU")
    art = edgec.compile(tiny_cnn_path, backend="tvm", output=tmp_path / "c", options={"target": json.dumps(t)})
    assert art.manifest["backend_info"]["target"]["tvm_target"]["mcpu"] == "x86-64"


def test_missing_cross_compiler_says_how_to_install(monkeypatch, tiny_cnn_path, tmp_path):
    import edgec.backends.tvm.targets as targets

    real = shutil.which
    monkeypatch.setattr(targets.shutil, "which", lambda n: None if n.startswith("aarch64") else real(n))
    with pytest.raises(BackendError, match="needs the cross compiler 'aarch64-linux-gnu-gcc'.*apt-get install gcc-aarch64-linux-gnu"):
        edgec.compile(tiny_cnn_path, backend="tvm", output=tmp_path / "x", options={"target": "rpi4"})


def test_tuning_a_cross_target_is_refused(tiny_cnn_path, tmp_path):
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("apt-get install gcc-aarch64-linux-gnu")
    with pytest.raises(UnsupportedError, match="tune=true for target 'rpi4'.*RPC tracker"):
        edgec.compile(tiny_cnn_path, backend="tvm", output=tmp_path / "x", options={"target": "rpi4", "tune": True})


def test_arm_target_without_board_is_a_clear_error(monkeypatch, tiny_cnn_path, tmp_path):
    import edgec.backends.tvm.backend as be

    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("apt-get install gcc-aarch64-linux-gnu")
    monkeypatch.setattr(be, "listening", lambda *a, **k: False)
    with pytest.raises(BackendError, match="cannot run on this .* host.*arm64_board.sh.*-O rpc=HOST:PORT"):
        edgec.compile(tiny_cnn_path, backend="tvm", output=tmp_path / "x", options={"target": "rpi4", "rpc": "auto"})


def test_cross_compiles_a_real_aarch64_library(tmp_path):
    """Lowering only (no board needed): the .so must be aarch64 code, as `file` reports it."""
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("apt-get install gcc-aarch64-linux-gnu")
    import tvm

    from edgec.backends.tvm import build, targets

    rt = targets.resolve("rpi4")
    target = tvm.target.Target(rt.tvm_target)
    fused = build.lower_to_fused_tir(build.import_onnx(build_tiny_cnn(), 1), target)
    lib = tmp_path / "module.so"
    build.compile_module(fused, target, lib, rt.cross_cc)
    from edgec.backends.tvm.backend import _elf_machine

    assert _elf_machine(lib) == "aarch64"
    if shutil.which("file"):
        import subprocess

        assert "ARM aarch64" in subprocess.run(["file", str(lib)], capture_output=True, text=True).stdout


def test_dynamic_inner_dimension_is_unsupported(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "L"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "L"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(UnsupportedError, match="dynamic dimension 1 \\(L\\)"):
        edgec.compile(m, backend="tvm", output=tmp_path / "d")


def test_cli_compile_with_target_host(run_cli, tiny_cnn_path, tmp_path):
    code, out, err = run_cli("compile", tiny_cnn_path, "--backend", "tvm", "--target", "host", "-o", tmp_path / "cli",
                             "-O", "schedule=none", "-O", "batch=2", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["backend"] == "tvm" and m["options"]["schedule"] == "naive" and m["options"]["batch"] == 2 and m["options"]["target"] == "host"


def test_rpc_runner_on_a_loopback_server(tmp_path, tiny_cnn_path):
    """The board path without a board: a host-arch TVM RPC server on loopback runs validation and latency."""
    from tvm import rpc

    server = rpc.Server(host="127.0.0.1", port=9391, port_end=9490)
    try:
        art = edgec.compile(tiny_cnn_path, backend="tvm", output=tmp_path / "r",
                            options={"rpc": f"127.0.0.1:{server.port}", "schedule": "naive"})
        info = art.manifest["backend_info"]
        assert info["validation_ran_on"] == "rpc server on loopback" and art.manifest["validation"]["passed"]
        runner = edgec.load(art.path, rpc=f"127.0.0.1:{server.port}")
        x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
        try:
            np.testing.assert_allclose(runner.run({"input": x})["logits"], _ort(tiny_cnn_path, {"input": x})[0],
                                       rtol=1e-4, atol=1e-4)
            stats = runner.benchmark({"input": x}, runs=3, warmup=1)  # timed by the server's time_evaluator
            assert stats.runs == 3 and stats.median_ms > 0
        finally:
            runner.close()
    finally:
        server.terminate()


@pytest.mark.slow  # a real tuning run: about a minute on 2 cores
def test_tuning_database_persists_and_is_reused(tmp_path):
    """A tiny MetaSchedule run (two tasks, a few trials) lands in $EDGEC_CACHE_DIR/tvm/<model+target key>;
    the next compile of the same model and target applies those records without tuning again."""
    from edgec.backends.tvm import tuning

    src = tmp_path / "two.onnx"
    onnx.save(build_two_input(), str(src))
    a = edgec.compile(src, backend="tvm", output=tmp_path / "t1",
                      options={"tune": True, "trials": 4, "tune_minutes": 3})
    info = a.manifest["backend_info"]
    db = Path(info["tuning_database"])
    assert db.parent == tuning.cache_root() and db.is_relative_to(Path(tuning.os.environ["EDGEC_CACHE_DIR"]))
    assert info["tuning"]["records_after"] > info["tuning"]["records_before"] == 0
    b = edgec.compile(src, backend="tvm", output=tmp_path / "t2")
    s = b.manifest["backend_info"]["schedules"]
    assert b.manifest["backend_info"]["tuning_database"] == str(db) and "tuning" not in b.manifest["backend_info"]
    assert s["tuning_records_available"] == info["tuning"]["records_after"] and s["tuned_functions"] >= 1
    # Another target is another key: nothing to reuse.
    c = edgec.compile(src, backend="tvm", output=tmp_path / "t3",
                      options={"target": json.dumps({"kind": "llvm", "mcpu": "x86-64", "num-cores": 1})}) \
        if tuning.os.uname().machine == "x86_64" else None
    if c is not None:
        assert c.manifest["backend_info"]["schedules"]["tuning_records_available"] == 0


def test_fast_stack_matches_inspect_stack_where_tvmscript_reads_it():
    """intrinsics.py imports MetaSchedule's tensor intrinsics with its own inspect.stack (no sys.modules scan
    per frame): the fields TVMScript reads must equal Python's, and a prim_func parsed under it is the same."""
    import inspect

    import tvm
    from tvm.script import tirx as T

    from edgec.backends.tvm import intrinsics

    def both():
        return inspect.stack(), intrinsics._stack()

    ref, fast = both()
    ref, fast = ref[1:], fast[1:]  # frame 0 is the line in both() that made each call
    assert len(ref) == len(fast)
    for r, f in zip(ref, fast):
        assert (r.frame, r.filename, r.lineno, r.function) == (f.frame, f.filename, f.lineno, f.function)
        assert r.code_context == f.code_context and r.index == f.index

    def parse():
        @T.prim_func
        def add_one(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
            for i in range(4):
                b[i] = a[i] + T.float32(1)
        return add_one

    plain = parse()
    real = inspect.stack
    inspect.stack = intrinsics._stack
    try:
        quick = parse()
    finally:
        inspect.stack = real
    tvm.ir.assert_structural_equal(plain, quick)
    # (the import itself runs in every sampled-schedule compile: test_tvm_schedules' schedule=sampled case)


def test_only_the_cpu_tensor_intrinsics_are_imported():
    """MetaSchedule's llvm rules find the x86/ARM intrinsics they tensorize with, its own import of the
    package is a no-op, CUDA's definitions (most of the import) are never run, and any other part is
    still there when asked for. In a fresh process: the import is once per process."""
    import subprocess
    import sys

    child = (
        "import sys\n"
        "from edgec.backends.tvm.intrinsics import import_tensor_intrinsics\n"
        "import_tensor_intrinsics()\n"
        "import tvm.s_tir.tensor_intrin as ti\n"
        "from tvm.s_tir import TensorIntrin\n"
        "TensorIntrin.get('dot_16x4_vnni'); TensorIntrin.get('dot_4x4_i8i8s32_neon')\n"
        "print(int('tvm.s_tir.tensor_intrin.cuda' in sys.modules or 'tvm.s_tir.tensor_intrin.metal' in sys.modules))\n"
        "ti.metal\n"  # a part the CPU import skips, imported when asked for (metal: the smallest)
        "print(int('tvm.s_tir.tensor_intrin.metal' in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "1"]


def test_numpy_constant_folding_equals_relax_foldconstant():
    """constfold.py computes weight data movement with numpy (FoldConstant builds an LLVM module per call):
    per-channel dequantize, transpose, reshape, isnan/where and float arithmetic of constants must give
    exactly FoldConstant's constants."""
    import tvm
    from tvm import relax

    from edgec.backends.tvm import constfold

    rng = np.random.default_rng(0)
    q = relax.const(rng.integers(-128, 128, (4, 3, 3, 2)).astype(np.int8), "int8")
    scale = relax.const(rng.uniform(0.01, 0.1, 4).astype(np.float32), "float32")
    zp = relax.const(np.zeros(4, np.int8), "int8")
    x = relax.Var("x", relax.TensorType((1, 2, 3, 3), "float32"))
    bb = relax.BlockBuilder()
    R = relax.op
    with bb.function("main", [x]):
        with bb.dataflow():
            w = bb.emit(R.dequantize(q, scale, zp, axis=0))
            wt = bb.emit(R.permute_dims(w, [0, 3, 1, 2]))
            b = bb.emit(R.reshape(R.multiply(relax.const(np.arange(4, dtype=np.float32)), relax.const(np.float32(0.5))),
                                  (1, 4, 1, 1)))
            lo = bb.emit(R.where(R.isnan(relax.const(np.float32(0.0))), relax.const(np.float32(-np.inf)),
                                 relax.const(np.float32(0.0))))
            y = bb.emit(R.maximum(R.add(R.nn.conv2d(x, wt), b), lo))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = bb.get()
    folded = constfold.fold(mod)
    text = folded["main"].script()
    assert not any(f"R.{op}(" in text for op in ("dequantize", "permute_dims", "reshape", "isnan", "where", "multiply"))
    ours = relax.transform.FoldConstant()(folded)  # numpy first; FoldConstant then only propagates
    ref = relax.transform.FoldConstant()(mod)
    tvm.ir.assert_structural_equal(ours, ref, map_free_vars=True)


CHILD = """
import os, sys, numpy as np, edgec
from edgec.backends.tvm.targets import host_cores
before = len(os.listdir("/proc/self/task"))
edgec.load(sys.argv[1], **({"threads": int(sys.argv[2])} if sys.argv[2:] else {})).run(
    {"input": np.zeros((1, 3, 16, 16), np.float32)})
print(len(os.listdir("/proc/self/task")) - before, host_cores())
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_the_artifact_runs_on_every_physical_core(host_artifact):
    """TVM sizes its pool at half the logical CPUs on x86 unless told (it assumes hyper-threads), so on
    a host without SMT every artifact ran on one core and --threads could not raise it (runner.py).
    Counted in fresh processes, as the pool is process-wide and sized when it starts: the default
    starts one worker per physical core beyond the first, more than --threads 1 does."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(host_artifact[1].path), *t], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for t in ((), ("1",))]
    (default, cores), (single, _) = [_counts(p) for p in procs]
    if cores < 2:
        pytest.skip("one physical core: TVM's pool has no workers to start")
    assert default - single == cores - 1


def _counts(proc) -> tuple[int, int]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return tuple(int(v) for v in out.split()[-2:])


def test_physical_cores_without_psutil_come_from_the_cpu_topology():
    """The tvm extra does not install psutil; then Linux's /sys topology counts the cores, as psutil does."""
    psutil = pytest.importorskip("psutil")
    from edgec.backends.tvm.targets import _topology_cores

    if not Path("/sys/devices/system/cpu/cpu0/topology/core_id").is_file():
        pytest.skip("no Linux CPU topology in /sys here")
    assert _topology_cores() == psutil.cpu_count(logical=False)
