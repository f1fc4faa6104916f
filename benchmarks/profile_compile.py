"""Where a compile's time goes: cProfile plus the manifest's stage_seconds for one `edgec.compile`.

    python benchmarks/profile_compile.py --backend onnxruntime --precision int8          # EfficientNet-Lite0
    python benchmarks/profile_compile.py --backend tvm --precision fp32 --top 40 --cold

Calibrates on imagenet_calib500[:200] and validates on imagenet_eval500 (500 images), as issue 17's
targets do. --cold uses an empty cache directory (nothing reused); without it the user's cache is used.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--preprocess", default="efficientnet-lite")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--precision", default="int8")
    p.add_argument("--calib-samples", type=int, default=200)
    p.add_argument("--val-samples", type=int, default=500)
    p.add_argument("-O", "--option", action="append", default=[], help="backend option key=value")
    p.add_argument("--cold", action="store_true", help="an empty EDGEC_CACHE_DIR: nothing reused")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", help="write the pstats file here")
    a = p.parse_args(argv)
    if a.cold:
        os.environ["EDGEC_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgec-prof-cache-")
    import edgec

    kw = dict(calibration=SHARED / "data" / "imagenet_calib500_jpeg.npz", calib_samples=a.calib_samples,
              validation=SHARED / "data" / "imagenet_eval500_jpeg.npz", val_samples=a.val_samples,
              preprocess=a.preprocess, options=dict(o.split("=", 1) for o in a.option), force=True)
    if a.precision == "fp32":
        kw.pop("calibration"), kw.pop("calib_samples")
    out = Path(tempfile.mkdtemp(prefix="edgec-prof-")) / "art"
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    art = edgec.compile(SHARED / "models" / f"{a.model}.onnx", a.backend, a.precision, output=out, **kw)
    prof.disable()
    wall = time.perf_counter() - t
    m = art.manifest
    print(f"{a.model} {a.backend} {a.precision}: {wall:.1f} s wall (load {os.getloadavg()[0]:.1f}), "
          f"agreement {m['validation'].get('top1_agreement')}")
    print("stage_seconds:", {k: v for k, v in m.get("stage_seconds", {}).items() if v >= 0.05})
    cal = (m.get("quantization") or {}).get("calibration") or {}
    print("calibration cache:", cal.get("cache"), "| reference cache:", m["validation"].get("reference_cache"))
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats("cumulative").print_stats(a.top)
    print("\n".join(line for line in s.getvalue().splitlines() if line.strip())[:12000])
    if a.out:
        st.dump_stats(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
