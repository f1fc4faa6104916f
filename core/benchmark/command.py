"""`edgec benchmark`: the argparse parser, handler and table (registered by core/cli.py)."""
from __future__ import annotations

from pathlib import Path

from edgec.core.cli_common import dump, table


def add_parser(sub):
    b = sub.add_parser("benchmark", help="latency percentiles, throughput and memory of artifacts on their runtimes",
                       description="Time one or more artifacts on their own runtimes (several are interleaved, with "
                                   "ratios against the first), and measure peak memory in a fresh process per artifact.")
    b.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="artifact directories (`edgec compile -o`)")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads per request (default 1)")
    b.add_argument("--batch", type=int, help="batch size (the artifact's batch must be dynamic or equal)")
    b.add_argument("--mode", choices=["latency", "throughput"], help="latency: one request at a time (default); "
                                                                     "throughput: --streams parallel requests")
    b.add_argument("--streams", type=int, help="parallel requests in throughput mode (default: CPU count)")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--duration", help="time for this long (10s, 500ms, 2m)")
    g.add_argument("--iterations", "-n", type=int, help="timed inferences per artifact (default 100)")
    b.add_argument("--warmup", type=int, default=5, help="untimed warm-up inferences (default 5)")
    b.add_argument("--input", "-i", help="input data (.npz, folder, images; default seeded random inputs)")
    b.add_argument("--preprocess", help="override the artifact's preprocessing spec for --input images")
    b.add_argument("--no-memory", action="store_true", help="skip the child-process memory measurement")
    b.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    b.set_defaults(func=cmd_benchmark)
    return b


def _mb(x) -> str:
    return "-" if x is None else f"{x / 1e6:.1f}"


def _ms(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_report(rep: dict) -> str:
    rows = []
    for a in rep["artifacts"]:
        lat, tp, vs, mem = a["latency_ms"] or {}, a["throughput"] or {}, a["vs_first"] or {}, a["memory"] or {}
        ci = lat.get("median_ci95")
        ratio = "-"
        if vs.get("ranked") is False:
            ratio = "not ranked"
        elif "latency_ratio" in vs:
            rci = vs.get("latency_ratio_ci95")
            ratio = f"{vs['latency_ratio']:.3f}" + (f" [{rci[0]:.3f}, {rci[1]:.3f}]" if rci else "")
        label = f"{Path(a['artifact']).name} ({a['backend']} {a['precision']})" + (" EMULATED" if a["emulated"] else "")
        rows.append([label, _ms(lat.get("min")), _ms(lat.get("median")) + (f" ±{(ci[1] - ci[0]) / 2:.3f}" if ci else ""),
                     _ms(lat.get("p90")), _ms(lat.get("p99")), _ms(lat.get("max")),
                     "-" if not tp else f"{tp['inferences_per_s']:.1f}", ratio,
                     _mb(mem.get("peak_rss_bytes")), _mb(mem.get("increment_bytes")), _mb(mem.get("size_on_disk_bytes"))])
    out = [table(rows, ["artifact", "min ms", "median ms (95% CI)", "p90", "p99", "max", "inf/s",
                        "latency vs first", "peak RSS MB", "+RSS MB", "disk MB"])]
    load = rep["host"]["load_average"]
    out.append(f"\nmode {rep['mode']}, streams {rep['streams']}, threads {rep['threads']}, batch {rep['batch'] or 'as compiled'}, "
               f"{rep['warmup']} warm-up excluded; {rep['order']}; load average {load[0]:.2f} on {rep['host']['cpus']} CPUs")
    out.append(f"noise: {rep['ci_method']}")
    out.append("memory: peak RSS of a fresh process over load + inference; +RSS over one that imported the same runtime")
    for a in rep["artifacts"]:
        if a["parallel"] and rep["mode"] == "throughput":
            out.append(f"{Path(a['artifact']).name}: {a['parallel']}")
        if a["emulated"] or a["device_timed"]:
            out.append(f"{Path(a['artifact']).name}: timed on {a['where']} by its own timer; not ranked against host numbers")
        if a["error"]:
            out.append(f"{Path(a['artifact']).name}: {a['error']}")
        if (a["memory"] or {}).get("error"):
            out.append(f"{Path(a['artifact']).name}: memory: {a['memory']['error']}")
        rt = (a["memory"] or {}).get("runtime_reported")
        if rt:
            out.append(f"{Path(a['artifact']).name}: runtime reports {rt}")
    return "\n".join(out)


def cmd_benchmark(args) -> int:
    from edgec.core.benchmark.api import benchmark

    rep = benchmark(args.artifacts, threads=args.threads, batch=args.batch, mode=args.mode, streams=args.streams,
                    iterations=args.iterations, duration=args.duration, warmup=args.warmup, input=args.input,
                    preprocess=args.preprocess, measure_memory=not args.no_memory).to_json()
    if args.json:
        dump(rep)
    else:
        print(format_report(rep))
    return 1 if all(a["error"] for a in rep["artifacts"]) else 0
