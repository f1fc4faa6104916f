"""`edgec.benchmark`: latency percentiles, throughput and memory of one or more artifacts on their own
runtimes, several artifacts timed interleaved with ratios against the first (benchmark_app / trtexec
for every backend)."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgec.core import progress
from edgec.core.backend import TensorSpec
from edgec.core.benchmark import memory, stats, timing
from edgec.core.errors import InputError
from edgec.core.version import __version__

MODES = ("latency", "throughput")


@dataclass
class BenchmarkReport:
    """What `edgec.benchmark` returns: `settings` (how it was measured) and one dict per artifact."""

    settings: dict
    artifacts: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {**self.settings, "artifacts": self.artifacts}

    def __getitem__(self, i: int) -> dict:
        return self.artifacts[i]


def parse_duration(text) -> float:
    """'10s', '500ms', '2m' or a number of seconds."""
    t = str(text).strip().lower()
    try:
        for suffix, scale in (("ms", 1e-3), ("s", 1.0), ("m", 60.0)):
            if t.endswith(suffix):
                v = float(t[: -len(suffix)]) * scale
                break
        else:
            v = float(t)
    except ValueError:
        raise InputError(f"--duration {text!r}: give seconds like 10s, 500ms or 2m") from None
    if not v > 0:
        raise InputError(f"--duration must be positive (got {text!r})")
    return v


def check_artifact(path) -> dict:
    """The manifest, after checking every file it lists is on disk with its recorded size and hash
    (a tampered or half-copied artifact would otherwise be timed as if it were the compiled one)."""
    from edgec.core.manifest import read_manifest
    from edgec.core.model_io import sha256_file

    path = Path(path)
    m = read_manifest(path)
    if not path.is_dir():
        raise InputError(f"{path} is a file; give the artifact directory `edgec compile -o` wrote")
    if not isinstance(m, dict) or not m.get("backend") or not isinstance(m.get("inputs"), list):
        raise InputError(f"{path}/manifest.json has no backend or inputs: not an edgec manifest; recompile the artifact")
    for name, rec in (m.get("files") or {}).items():
        f = path / name
        if not f.is_file():
            raise InputError(f"artifact {path}: {name} listed in its manifest is missing; recompile the artifact")
        if f.stat().st_size != rec.get("size") or ("sha256" in rec and sha256_file(f) != rec["sha256"]):
            raise InputError(f"artifact {path}: {name} does not match its manifest (size or sha256 changed); "
                             "recompile the artifact")
    return m


def _batch_specs(path, specs: list[TensorSpec], batch: int | None) -> list[TensorSpec]:
    if batch is None:
        return specs
    out = []
    for s in specs:
        if not s.shape:
            raise InputError(f"artifact {path}: input '{s.name}' is a scalar; --batch does not apply")
        b = s.shape[0]
        if isinstance(b, int) and b > 0 and b != batch:
            raise InputError(f"artifact {path} has a static batch of {b} (input '{s.name}' {list(s.shape)}); "
                             f"use --batch {b} or recompile with a dynamic batch")
        out.append(TensorSpec(s.name, s.dtype, (batch,) + tuple(s.shape[1:])))
    return out


def _feeds(path, manifest: dict, batch: int | None, data, preprocess, seed: int) -> tuple[dict, str]:
    from edgec.core.model_io import random_feeds

    specs = _batch_specs(path, [TensorSpec.from_json(s) for s in manifest["inputs"]], batch)
    if data is None:
        return random_feeds(specs, np.random.default_rng(seed)), f"seeded random (seed {seed})"
    from edgec.core.data import open_dataset

    pp = preprocess or (manifest.get("preprocess") or {}).get("spec")
    ds = open_dataset(data, [TensorSpec.from_json(s) for s in manifest["inputs"]], pp)
    want = batch or 1
    parts: dict[str, list] = {}
    got = 0
    for sample in ds:
        for k, v in sample.feeds.items():
            parts.setdefault(k, []).append(np.asarray(v))
        got += len(next(iter(sample.feeds.values())))
        if got >= want:
            break
    if not parts:
        raise InputError(f"--input {data} holds no samples")
    feeds = {k: np.concatenate(v)[:want] if batch else v[0] for k, v in parts.items()}
    if batch and got < want:  # fewer samples than the batch: repeat them
        feeds = {k: np.resize(v, (want,) + v.shape[1:]) for k, v in feeds.items()}
    return feeds, f"{data} (first {want} sample{'s' if want > 1 else ''})"


def _load(path, threads):
    from edgec.core.loader import load
    return load(path, threads=threads)


def benchmark(artifacts, *, threads: int | None = 1, batch: int | None = None, mode: str | None = None,
              streams: int | None = None, iterations: int | None = None, duration=None, warmup: int = 5,
              input=None, preprocess: str | None = None, memory_runs: int = 10, measure_memory: bool = True,
              seed: int = 0, blocks: int = stats.BLOCKS) -> BenchmarkReport:
    """Benchmark artifact directories on their own runtimes; several are timed interleaved.

    mode: "latency" (one request at a time; default) or "throughput" (`streams` parallel requests:
      OpenVINO's own async requests over NUM_STREAMS, else one thread per stream over its own runner).
    threads: intra-op threads per request (per stream in throughput mode). iterations / duration (s or
      "10s"): how long to time (default 100 iterations); warm-up runs are untimed.
    Memory comes from fresh child processes, one per artifact (see `edgec.core.benchmark.memory`).
    """
    paths = [artifacts] if isinstance(artifacts, (str, os.PathLike)) else list(artifacts)
    if not paths:
        raise InputError("no artifacts to benchmark; give one or more directories `edgec compile -o` wrote")
    if mode is None:
        mode = "throughput" if (streams or 1) > 1 else "latency"
    if mode not in MODES:
        raise InputError(f"--mode {mode!r}: choose latency or throughput")
    if streams is not None and streams < 1:
        raise InputError(f"--streams must be >= 1 (got {streams})")
    if mode == "latency" and (streams or 1) > 1:
        raise InputError(f"--streams {streams} needs --mode throughput (latency mode runs one request at a time)")
    if mode == "throughput" and streams is None:
        streams = os.cpu_count() or 1
    streams = streams or 1
    if iterations is not None and iterations < 1:
        raise InputError(f"--iterations must be >= 1 (got {iterations})")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1 (got {threads})")
    if batch is not None and batch < 1:
        raise InputError(f"--batch must be >= 1 (got {batch})")
    if warmup < 0:
        raise InputError(f"--warmup must be >= 0 (got {warmup})")
    dur = None if duration is None else parse_duration(duration)
    if dur is not None and iterations is not None:
        raise InputError("give --duration or --iterations, not both")
    if dur is None and iterations is None:
        iterations = 100

    names, manifests, feeds_by, inputs_from = [], {}, {}, {}
    for p in paths:
        m = check_artifact(p)
        name = str(p)
        if name in manifests:
            raise InputError(f"artifact {p} given twice")
        names.append(name)
        manifests[name] = m
        feeds_by[name], inputs_from[name] = _feeds(p, m, batch, input, preprocess, seed)

    runners, extra = {}, {}
    rows = []
    try:
        for n in names:
            progress.say(f"benchmark: loading {n}")
            runners[n] = _load(n, threads)
            # The loaded runner's specs are the file's truth (a TFLite / TVM / OpenVINO file may be built for
            # batch 1 while the manifest keeps the source model's symbolic N).
            _batch_specs(n, list(runners[n].inputs), batch)
            if mode == "throughput":
                extra[n] = timing.make_extra(lambda n=n: _load(n, threads), runners[n], streams)
        where = {n: getattr(runners[n], "where", "host") for n in names}
        if mode == "latency":
            progress.say(f"benchmark: {len(names)} artifact(s) interleaved, "
                         f"{iterations or f'{dur:g} s of'} runs after {warmup} warm-up, threads={threads}")
            times, errors, order = timing.round_robin(runners, None, runs=iterations, duration=dur, warmup=warmup,
                                                      feeds_by=feeds_by)
            tput = {}
            how = {n: "one request at a time" for n in names}
        else:
            times, errors, order, tput, how = _throughput(runners, extra, feeds_by, streams, iterations, dur,
                                                          warmup, threads, blocks)
    finally:
        for r in list(runners.values()) + [x for xs in extra.values() for x in xs]:
            try:
                r.close()
            except Exception:
                pass

    ref = names[0]
    baselines: dict = {}
    for n in names:
        m = manifests[n]
        row = {"artifact": str(Path(n).resolve()), "backend": m.get("backend"), "precision": m.get("precision"),
               "where": where[n], "emulated": "emulat" in where[n], "device_timed": where[n] != "host",
               "input": inputs_from[n], "parallel": how.get(n), "error": errors.get(n), "latency_ms": None,
               "throughput": None, "vs_first": None, "memory": None}
        if n not in errors and times.get(n):
            lat = stats.latency_summary(times[n], blocks)
            row["latency_ms"] = lat
            b = batch or 1
            if mode == "latency":
                ips = 1e3 / lat["mean"]
                row["throughput"] = {"inferences_per_s": ips, "samples_per_s": ips * b, "ci95": None,
                                     "note": "sequential: 1 / mean latency"}
            else:
                row["throughput"] = {**tput[n], "samples_per_s": tput[n]["inferences_per_s"] * b}
            row["vs_first"] = _versus(n, ref, names, times, tput, where, errors, mode, blocks)
        row["memory"] = _memory(n, m, feeds_by[n], threads, memory_runs, baselines) if measure_memory else {
            "size_on_disk_bytes": memory.size_on_disk(m)}
        rows.append(row)

    load1, load5, load15 = os.getloadavg()
    settings = {
        "edgec_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode, "streams": streams, "threads": threads, "batch": batch, "warmup": warmup,
        "iterations": iterations, "duration_s": dur, "blocks": blocks, "ci_method": stats.CI_METHOD,
        "order": ("interleaved round-robin, start rotating every round" if mode == "latency" else
                  "interleaved blocks: each block runs every artifact once, start rotating"),
        "rounds": order, "reference": str(Path(ref).resolve()),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "load_average": [load1, load5, load15]},
    }
    return BenchmarkReport(settings, rows)


def _memory(n, manifest, feeds, threads, runs, baselines) -> dict:
    out = {"size_on_disk_bytes": memory.size_on_disk(manifest)}
    try:
        progress.say(f"benchmark: measuring memory of {n} in a fresh process")
        out.update(memory.measure(n, manifest["backend"], feeds, threads, runs, baselines))
    except Exception as e:
        out["error"] = timing.first_line(e)
    return out


def _versus(n, ref, names, times, tput, where, errors, mode, blocks) -> dict | None:
    if ref in errors or not times.get(ref):
        return None
    if where[n] != where[ref]:
        return {"ranked": False, "note": f"not ranked: timed on {where[n]}, the first artifact on {where[ref]}"}
    out = {"ranked": True, **stats.ratio_summary(times[ref], times[n], blocks)}
    if mode == "throughput" and n in tput and ref in tput:
        a, b = tput[ref]["blocks"], tput[n]["blocks"]
        r = tput[n]["inferences_per_s"] / tput[ref]["inferences_per_s"]
        out["throughput_ratio"] = r
        out["throughput_ratio_ci95"] = stats.interval(r, [y / x for x, y in zip(a, b)])
    return out


def _throughput(runners, extra, feeds_by, streams, iterations, dur, warmup, threads, blocks):
    names = list(runners)
    errors: dict[str, str] = {}
    lat = {n: [] for n in names}
    count = {n: 0 for n in names}
    wall = {n: 0.0 for n in names}
    per_block = {n: [] for n in names}
    how: dict[str, str] = {}
    nb = max(1, min(blocks, (iterations or 10 ** 9) // max(1, streams)))
    it_block = None if iterations is None else max(1, iterations // nb)
    d_block = None if dur is None else dur / (nb * len(names))
    for n in names:
        try:
            if warmup:
                timing.stream_block(runners[n], extra[n], feeds_by[n], streams, iterations=warmup * streams,
                                    duration=None, threads=threads)
        except Exception as e:
            errors[n] = f"benchmark failed: {timing.first_line(e)}"
    order = []
    for b in progress.bar(range(nb), total=nb, desc=f"throughput {streams} streams", unit="block"):
        live = [n for n in names if n not in errors]
        if not live:
            break
        seq = timing.rotated(live, b)
        order.append(seq)
        for n in seq:
            try:
                ls, w, how[n] = timing.stream_block(runners[n], extra[n], feeds_by[n], streams, iterations=it_block,
                                                    duration=d_block, threads=threads)
            except Exception as e:
                errors[n] = f"benchmark failed: {timing.first_line(e)}"
                continue
            lat[n] += ls
            count[n] += len(ls)
            wall[n] += w
            per_block[n].append(len(ls) / w if w > 0 else float("nan"))
    tput = {}
    for n in names:
        if n in errors or not wall[n]:
            continue
        ips = count[n] / wall[n]
        tput[n] = {"inferences_per_s": ips, "ci95": stats.interval(ips, per_block[n]), "blocks": per_block[n],
                   "requests": count[n], "wall_s": wall[n]}
    return lat, errors, order, tput, how
