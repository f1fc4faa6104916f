"""`edgec auto --hardware x86 --max-drop 1` against `edgec compare`'s default grid on a ../shared model.

Splits imagenet_calib500 into calib[:200] (calibration) and calib[200:] (selection, --val), runs
`edgec.compare` over the x86 profile's backends x {fp32, fp16, int8} into the same sweep directory auto
uses (so auto reuses those cells from the cache: they are the same cells), then `edgec.auto` with
--test imagenet_eval500 (held out: the winner is measured there). Finally the auto winner and the
fastest compare cell that meets the budget on the selection data are timed side by side, interleaved, at
1 thread (edgec.benchmark), and the ratio is printed.

    .venv/bin/python benchmarks/bench_auto.py squeezenet1_1 squeezenet-bgr [OUT]
    .venv/bin/python benchmarks/bench_auto.py mobilenetv2_backbone imagenet [OUT] --min-cosine 0.99

A model whose outputs are not classes (the MobileNetV2 backbone's 1280 features) is judged by
--min-cosine (cosine to its FP32 features over the selection split) instead of --max-drop 1.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def split_pack(src: Path, out_dir: Path, parts: dict[str, slice]) -> dict[str, Path]:
    """Slices of a JPEG pack (`jpeg` blob + `offsets` + `labels`) as packs of the same format."""
    z = np.load(src, allow_pickle=False)
    blob, off, labels = z["jpeg"], z["offsets"], z["labels"]
    out = {}
    for name, sl in parts.items():
        idx = range(len(labels))[sl]
        chunks = [blob[off[i]:off[i + 1]] for i in idx]
        new_off = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int64)
        p = out_dir / f"{src.stem}_{name}.npz"
        extra = {k: z[k] for k in z.files if k not in ("jpeg", "offsets", "labels", "wnids")}
        np.savez(p, jpeg=np.concatenate(chunks), offsets=new_off, labels=labels[sl],
                 **({"wnids": z["wnids"][sl]} if "wnids" in z.files else {}), **extra)
        out[name] = p
    return out


def main(model_name: str, preprocess: str, out: str | None = None, min_cosine: float | None = None) -> None:
    import edgec
    from edgec.core.auto import hardware
    from edgec.core.auto.plan import Demands, judge

    model = SHARED / "models" / f"{model_name}.onnx"
    out_dir = Path(out or f"/tmp/bench_auto_{model_name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = split_pack(SHARED / "data" / "imagenet_calib500_jpeg.npz", out_dir, {"calib": slice(0, 200), "select": slice(200, 500)})
    test = SHARED / "data" / "imagenet_eval500_jpeg.npz"
    backends = [t["backend"] for t in hardware.load("x86")["targets"]]
    common = dict(calibration=splits["calib"], validation=splits["select"], preprocess=preprocess)
    t0 = time.monotonic()
    grid = edgec.compare(model, backends, "fp32,fp16,int8", output=out_dir / "models" / model_name, threads=1,
                         memory=False, **common)
    t_grid = time.monotonic() - t0
    ref = grid.row("onnxruntime", "fp32")
    ref_acc = grid.meta.get("reference_top1_accuracy")
    demands = Demands(min_cosine=min_cosine) if min_cosine is not None else Demands(max_drop=1.0)
    met = [r for r in grid.rows if judge(r, ref, ref_acc, demands).meets]
    best_grid = min(met, key=lambda r: r["latency_ms_median"]) if met else None
    t1 = time.monotonic()
    res = edgec.auto(model, "x86", max_drop=None if min_cosine is not None else 1.0, min_cosine=min_cosine, test=test,
                     output=out_dir, budget_minutes=60, **common)
    t_auto = time.monotonic() - t1
    w = res.winner
    print(f"compare grid: {t_grid:.0f} s; auto (after the grid, its cells reused): {t_auto:.0f} s")
    print(f"demands: {demands}; uptime {__import__('os').getloadavg()}")
    print("grid cells meeting the demands on the selection split:",
          ", ".join(f"{r['backend']}-{r['precision']} {r['latency_ms_median']:.3f} ms" for r in met))
    print(f"auto winner: {w and w['candidate']}  test: {json.dumps((w or {}).get('test'))}")
    if w and best_grid:
        b = edgec.benchmark([res.files["artifact"], best_grid["artifact"]], threads=1, duration=20, measure_memory=False,
                            input=splits["select"], preprocess=preprocess)
        for a in b.artifacts:
            print(f"  {a['artifact']}: median {a['latency_ms']['median']:.3f} ms, vs first {json.dumps(a['vs_first'])}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    mc = None
    if "--min-cosine" in argv:
        i = argv.index("--min-cosine")
        mc = float(argv[i + 1])
        del argv[i:i + 2]
    main(*argv, min_cosine=mc)
