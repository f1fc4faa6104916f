"""`edgec inspect`: what is in a model, before deciding how to compile it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgec.core.compression.entropy import format_size, size_report
from edgec.core.graph_stats import model_stats
from edgec.core.model_io import input_specs, load_model, output_specs


def inspect_model(path) -> dict:
    p = Path(path)
    model = load_model(p)
    stats = model_stats(model)
    ops = Counter((n.domain + "::" if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node)
    return {
        "path": str(p),
        "file_bytes": p.stat().st_size,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [s.to_json() for s in input_specs(model)],
        "outputs": [s.to_json() for s in output_specs(model)],
        "nodes": stats["nodes"],
        "initializers": stats["initializers"],
        "parameters": stats["parameters"],
        "macs": stats["macs"],
        "weight_bytes": stats["bytes"],
        "op_histogram": dict(ops.most_common()),
        "size": size_report(model),
    }


def _human(n: float, unit: str = "") -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()


def format_inspection(info: dict) -> str:
    lines = [f"model        {info['path']} ({_human(info['file_bytes'], 'B')})",
             f"producer     {info['producer'] or '-'}   ir_version {info['ir_version']}",
             "opsets       " + ", ".join(f"{k} {v}" for k, v in info["opsets"].items())]
    for kind in ("inputs", "outputs"):
        for s in info[kind]:
            lines.append(f"{kind[:-1]:<12} {s['name']}  {s['dtype']}  {s['shape']}")
    lines += [f"nodes        {info['nodes']}   initializers {info['initializers']}",
              f"parameters   {_human(info['parameters'])}   weights {_human(info['weight_bytes'], 'B')}",
              f"MACs         {_human(info['macs'])} (symbolic dims counted as 1)",
              format_size(info["size"]),
              "ops          " + ", ".join(f"{k} {v}" for k, v in info["op_histogram"].items())]
    return "\n".join(lines)
