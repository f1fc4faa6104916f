"""Knowledge-distillation fine-tuning of a compressed model against its FP32 original (`--finetune distill`).

The teacher is the FP32 ONNX on onnxruntime; the student is the compressed ONNX as a torch module
(onnx2torch, whose modules keep the ONNX graph node for node). Training reads only unlabelled
calibration images: random horizontal flips and scale-jittered crops, loss KL(teacher || student)
on temperature-softened logits. One tenth of the images is held out; the weights with the lowest
held-out KL are kept, so a budget that ends mid-epoch or an epoch that overfits costs nothing.

Back to ONNX without an exporter: training changes only Conv/Linear weights and biases, so they are
written into the student's own initializers (same graph, same names), and the normal
quantize -> lower -> validate follows. onnx2torch needs torchvision only for NMS/RoiAlign; when it
is absent (PyPI's torchvision does not match the CPU torch wheel) a placeholder module that names
itself in the error stands in, so those two ops alone fail.

Measured: benchmarks/bench_structured.py.
"""
from __future__ import annotations

import sys
import time
import types
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.core.errors import InputError
from edgec.core.quantization.graph import input_uses

TEMPERATURE = 2.0
BATCH = 16
LR = 5e-5
HOLDOUT = 0.1


def _import():
    """(torch, onnx2torch.convert) or a one-line InputError naming the extra."""
    try:
        import torch
    except ImportError as e:
        raise InputError("--finetune distill needs torch: pip install 'edgec[torch]' (the CPU wheel; then "
                         "pip install --no-deps onnx2torch)") from e
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        tv.__edgec_placeholder__ = True
        ops = types.ModuleType("torchvision.ops")

        def _missing(*a, **k):
            raise InputError("this model's NMS/RoiAlign needs torchvision for fine-tuning: pip install a "
                             "torchvision that matches your torch")

        ops.nms = ops.box_convert = ops.roi_align = _missing
        tv.ops = ops
        sys.modules.setdefault("torchvision", tv)
        sys.modules.setdefault("torchvision.ops", ops)
    try:
        from onnx2torch import convert
    except ImportError as e:
        raise InputError("--finetune distill needs onnx2torch: pip install --no-deps onnx2torch") from e
    return torch, convert


def batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy that takes any batch size: symbolic dim 0 on inputs/outputs, and Reshape targets that
    spell the exported batch of 1 (torch exports `x.view(1, -1)`) rewritten as [-1, rest...]."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inferred = onnx.shape_inference.infer_shapes(m)
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
              for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    uses = input_uses(g)
    for n in g.node:
        if n.op_type != "Reshape":
            continue
        src = inits.get(n.input[1])
        arr = numpy_helper.to_array(src) if src is not None else (
            numpy_helper.to_array(consts[n.input[1]].attribute[0].t) if n.input[1] in consts else None)
        out = shapes.get(n.output[0])
        if arr is None or arr.ndim != 1 or not len(arr) or arr[0] != 1 or not out or None in out[1:]:
            continue
        name = f"{n.input[1]}__batch" if uses.get(n.input[1], 0) > 1 else n.input[1]
        new = numpy_helper.from_array(np.array([-1] + out[1:], np.int64), name)
        if name in inits:
            inits[name].CopyFrom(new)
        elif name in consts:
            consts[name].attribute[0].t.CopyFrom(new)
        else:
            g.initializer.append(new)
            n.input[1] = name
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    del g.value_info[:]
    return m


def _augment(torch, x, rng):
    """Horizontal flip and a random crop of 70-100 % of the side, resized back (per batch)."""
    import torch.nn.functional as F

    if rng.random() < 0.5:
        x = torch.flip(x, dims=[3])
    h, w = x.shape[2:]
    s = rng.uniform(0.7, 1.0)
    ch, cw = max(int(h * s), 1), max(int(w * s), 1)
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    x = x[:, :, top:top + ch, left:left + cw]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def _kl(torch, s_logits, t_logits, temp=TEMPERATURE):
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(s_logits / temp, -1), F.log_softmax(t_logits / temp, -1),
                    log_target=True, reduction="batchmean") * temp * temp


def finetune(student: onnx.ModelProto, teacher: onnx.ModelProto, calibration, *, minutes: float = 10.0,
             epochs: int = 3, lr: float = LR, batch: int = BATCH, seed: int = 0, samples: int | None = None,
             threads: int = 1, progress: Callable[[str], None] | None = None,
             prepare: Callable | None = None) -> tuple[onnx.ModelProto, dict]:
    """(fine-tuned student, report); see the module docstring. Single-input image models.

    `prepare(torch, net) -> (Adam param groups, report entries)` chooses what trains and how (codes.py
    freezes the integer codes of compressed layers); by default every parameter at `lr`.

    One torch thread by default: on a loaded 2-core machine two OpenMP threads made a tiny model's
    training step 7x slower (spinning workers), and onnxruntime's teacher runs in between."""
    torch, convert = _import()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _finetune(torch, convert, student, teacher, calibration, minutes, epochs, lr, batch, seed, samples,
                         progress, prepare)
    finally:
        torch.set_num_threads(prev_threads)


def _finetune(torch, convert, student, teacher, calibration, minutes, epochs, lr, batch, seed, samples, progress,
              prepare=None):
    from edgec.core import progress as prog
    from edgec.core.quantization.calibration import session

    say = progress or (lambda m: None)
    t0 = time.perf_counter()
    if len(student.graph.input) - len({t.name for t in student.graph.initializer}
                                      & {i.name for i in student.graph.input}) != 1:
        raise InputError("--finetune distill supports single-input models")
    xs = [next(iter(s.feeds.values())) for s in (calibration.take(samples) if samples else calibration)]
    x = np.concatenate([a if a.ndim == 4 else a[None] for a in xs]).astype(np.float32)
    if x.ndim != 4 or len(x) < 10:
        raise InputError(f"--finetune distill needs at least 10 NCHW image samples in --calib (got {x.shape})")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    order = rng.permutation(len(x))
    n_hold = max(int(len(x) * HOLDOUT), 4)
    hold, train = x[order[:n_hold]], x[order[n_hold:]]
    t_sess = session(batchable(teacher))
    t_in = t_sess.get_inputs()[0].name

    def teach(a: np.ndarray) -> np.ndarray:
        return t_sess.run(None, {t_in: a})[0]

    net = convert(batchable(student), attach_onnx_mapping=True)
    net.train()
    extra: dict = {}
    if prepare is not None:
        groups, extra = prepare(torch, net)
    else:
        groups = [{"params": [p for p in net.parameters() if p.requires_grad]}]
    opt = torch.optim.Adam(groups, lr=lr)
    t_hold = torch.from_numpy(np.concatenate([teach(hold[i:i + batch]) for i in range(0, len(hold), batch)]))

    def held_kl() -> float:
        with torch.no_grad():
            out = torch.cat([net(torch.from_numpy(hold[i:i + batch])) for i in range(0, len(hold), batch)])
            return float(_kl(torch, out, t_hold))

    kl0 = held_kl()
    best = (kl0, {k: v.detach().clone() for k, v in net.state_dict().items()})
    budget = minutes * 60.0
    history = []
    steps = 0
    stopped = "epochs"
    for ep in range(epochs):
        perm = rng.permutation(len(train))
        batches = [perm[i:i + batch] for i in range(0, len(perm), batch)]
        losses = []
        for idx in prog.bar(batches, desc=f"distill epoch {ep + 1}/{epochs}", unit="batch"):
            if time.perf_counter() - t0 > budget:
                stopped = "time budget"
                break
            xb = _augment(torch, torch.from_numpy(train[idx]), rng)
            tb = torch.from_numpy(teach(xb.numpy().astype(np.float32)))
            loss = _kl(torch, net(xb), tb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            steps += 1
        kl = held_kl()
        history.append({"epoch": ep + 1, "train_kl": round(float(np.mean(losses)), 5) if losses else None,
                        "heldout_kl": round(kl, 5), "seconds": round(time.perf_counter() - t0, 1)})
        say(f"distill epoch {ep + 1}: held-out KL {kl0:.4f} -> {kl:.4f}")
        if kl < best[0]:
            best = (kl, {k: v.detach().clone() for k, v in net.state_dict().items()})
        if stopped != "epochs":
            break
    net.load_state_dict(best[1])
    out = _write_back(student, net, torch)
    rep = {"technique": "distill", "teacher": "fp32 onnxruntime", "train_images": int(len(train)),
           "heldout_images": int(n_hold), "epochs_run": len(history), "steps": steps, "stopped_by": stopped,
           "heldout_kl_before": round(kl0, 5), "heldout_kl_after": round(best[0], 5), "history": history,
           "temperature": TEMPERATURE, "lr": lr, "batch": batch, "minutes_budget": minutes,
           "seconds": round(time.perf_counter() - t0, 1), **extra}
    return out, rep


def _write_back(student: onnx.ModelProto, net, torch) -> onnx.ModelProto:
    """The student ONNX with every Conv/Gemm weight and bias taken from the trained modules."""
    out = onnx.ModelProto()
    out.CopyFrom(student)
    by_output = {n.output[0]: n for n in out.graph.node}
    inits = {t.name: t for t in out.graph.initializer}
    done = 0
    for _, mod in net.named_modules():
        mapping = getattr(mod, "onnx_mapping", None)
        if mapping is None or not isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            continue
        node = by_output.get(mapping.outputs[0])
        if node is None or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = mod.weight.detach().numpy().astype(np.float32)
        if node.op_type == "Gemm":
            alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            w = w / alpha
            w = w if trans_b else w.T
        t = inits[node.input[1]]
        t.CopyFrom(numpy_helper.from_array(w.reshape(tuple(t.dims)), t.name))
        if mod.bias is not None and len(node.input) > 2 and node.input[2] in inits:
            b = mod.bias.detach().numpy().astype(np.float32)
            if node.op_type == "Gemm":
                b = b / next((a.f for a in node.attribute if a.name == "beta"), 1.0)
            bt = inits[node.input[2]]
            bt.CopyFrom(numpy_helper.from_array(b.reshape(tuple(bt.dims)), bt.name))
        done += 1
    if not done:
        raise InputError("fine-tuning found no Conv/Gemm layer to write back")
    return out
