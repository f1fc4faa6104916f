"""TVM's part of the precision audit.

TVM 0.27's Relax frontend lowers QuantizeLinear/DequantizeLinear to float round/clip/scale arithmetic and
FoldConstant dequantizes the int8 weights at compile time; the compiled TIR kernels' operand types
(recorded at compile from the fused module, manifest backend_info.int8) say whether any conv/matmul
kernel took integer operands. The module.so keeps no per-layer map back to ONNX nodes, so when every
kernel is float each ONNX conv/gemm is reported fp32 with that reason, and when some are integer the
per-layer precision is reported unknown rather than guessed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from edgec.core.backend import Runner
from edgec.core.debug.layers import qdq_exposure


def audit(artifact_dir: Path, manifest: Mapping) -> list[dict]:
    import onnx

    from edgec.core.quantization.graph import WEIGHTED_OPS, ensure_node_names

    src = manifest.get("source")
    if not src or not Path(src).is_file():
        from edgec.core.errors import InputError
        raise InputError(f"tvm audit: the artifact's ONNX source {src!r} is not there (it names the layers)")
    m = ensure_node_names(onnx.load(src, load_external_data=False))
    int8 = (manifest.get("backend_info") or {}).get("int8") or {}
    precision = manifest.get("precision", "fp32")
    ints = int8.get("kernels_with_integer_operands", 0)
    floats = int8.get("kernels_with_float_operands")
    rows = []
    for n in m.graph.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        if precision != "int8":
            rows.append({"name": n.name, "op": n.op_type, "precision": precision, "kernel": "TIR", "why": f"a {precision} artifact"})
        elif ints == 0:
            rows.append({"name": n.name, "op": n.op_type, "precision": "fp32", "kernel": "TIR float32",
                         "why": f"TVM lowers Q/DQ to float arithmetic (fake quantization): all {floats} conv/matmul "
                                "kernels take float32 operands"})
        else:
            rows.append({"name": n.name, "op": n.op_type, "precision": "unknown", "kernel": "TIR",
                         "why": f"{ints} kernels take integer operands, but TVM keeps no map from kernels to ONNX nodes"})
    return rows


# ------------------------------------------------------------------ intermediates (`edgec debug`)
#
# module.so keeps no per-layer values and no map from its fused kernels to ONNX nodes (the Relax
# frontend records no spans), so a tensor cannot be read out of the artifact's own module. What can be
# done, and is done here, is Polygraphy's `mark all` for TVM: the Q/DQ ONNX TVM compiled (kept in the
# artifact as model.onnx when compiled with -O debug_onnx=true, which `edgec debug` sets) is built again
# with the wanted tensors as extra graph outputs, through the same import, layout, tuning records and
# schedule rules, and run on the host. An extra output ends a fused kernel where it is read, so the
# debug module's fusion differs from module.so's; the two modules' model outputs are compared side by
# side (compare.py: outputs_cosine_vs_artifact), so a difference the exposure made would show.

DEBUG_ONNX = "model.onnx"


class ExposedRunner(Runner):
    """The debug module's outputs: the model's, plus the exposed tensors under their FP32 names."""

    def __init__(self, runner, exposed: dict[str, str], outputs: list[str], layout: str):
        self.runner, self.exposed, self.model_outputs = runner, exposed, outputs
        self.inputs, self.outputs = runner.inputs, runner.outputs
        self.note = (f"tvm: a debug build of the artifact's Q/DQ ONNX (model.onnx) with the exposed tensors as extra "
                     f"outputs, same target, {layout} layout and schedules (a quantized tensor is read after its "
                     "dequantize); each extra output ends a fused kernel there, so its fusion is not module.so's")

    def run(self, feeds):
        vals = self.runner.run(feeds)
        out = {t: vals[r] for t, r in self.exposed.items() if r in vals}
        out.update({o: vals[o] for o in self.model_outputs if o in vals})
        return out

    def close(self):
        self.runner.close()


def intermediates(artifact_dir: Path, manifest: Mapping, names: list[str], threads: int | None = None,
                  meta_file: str = "tvm_meta.json"):
    import json
    import shutil
    import tempfile

    import onnx
    import tvm
    from onnx import helper

    from edgec.backends.tvm import build, targets, tuning
    from edgec.backends.tvm.runner import LocalRunner
    from edgec.core.backend import TensorSpec
    from edgec.core.debug.layers import tensor_types
    from edgec.core.errors import UnsupportedError

    d = Path(artifact_dir)
    if not (d / DEBUG_ONNX).is_file():
        raise UnsupportedError("tvm: module.so returns only the model outputs and this artifact keeps no ONNX to "
                               "build a debug module from: compile it with -O debug_onnx=true (`edgec debug MODEL "
                               "--backend tvm` does)")
    meta = json.loads((d / meta_file).read_text())
    if meta.get("arch") != targets.host_arch() or "rpc" in (meta.get("execution") or {}):
        raise UnsupportedError(f"tvm: the debug module is built and run on this host; this artifact is "
                               f"{meta.get('arch')} code for {meta.get('execution', {}).get('where', 'a board')}")
    opts = dict(manifest.get("options") or {})
    info = manifest.get("backend_info") or {}
    qm = onnx.load(str(d / DEBUG_ONNX))
    exposed = qdq_exposure(qm, names)
    m = onnx.ModelProto()
    m.CopyFrom(qm)
    have = {o.name for o in m.graph.output}
    types = tensor_types(qm)
    inputs = {i.name for i in m.graph.input}
    extra = [r for r in dict.fromkeys(exposed.values()) if r not in have and r not in inputs]
    for r in extra:
        m.graph.output.append(helper.make_tensor_value_info(r, types.get(r, onnx.TensorProto.FLOAT), None))
    exposed = {t: r for t, r in exposed.items() if r not in inputs or r in have}  # inputs: not an output of TVM's
    rt = targets.resolve(opts.get("target", "host"))
    if threads and rt.name == "host":
        rt.tvm_target["num-cores"] = int(threads)
    target = tvm.target.Target(rt.tvm_target)
    batch = int(opts.get("batch", 1) or 1)
    layout = info.get("layout", "nchw")
    mod = build.import_onnx(m, batch)
    fused = build.lower_to_fused_tir(mod, target, layout)
    db_path = tuning.database_dir(tuning.database_key(qm.SerializeToString(), rt.tvm_target, batch, layout))
    if tuning.record_count(db_path) and opts.get("use_database", True):
        fused = build.apply_database(fused, target, tuning.open_database(db_path))
    fused, _ = build.schedule_untuned(fused, target, opts.get("schedule", "rules"))
    tmp = Path(tempfile.mkdtemp(prefix="edgec-tvm-debug-"))
    try:
        build.compile_module(fused, target, tmp / "debug.so", None)
        outs = [TensorSpec(o.name, "float32", ()) for o in m.graph.output]
        ins = [TensorSpec.from_json(s) for s in meta["inputs"]]
        if "params" in meta:
            ins = [s for s in ins if s.name in set(meta["params"])]
        runner = LocalRunner(tmp / "debug.so", ins, outs, threads)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExposedRunner(runner, exposed, [o.name for o in qm.graph.output], layout)
