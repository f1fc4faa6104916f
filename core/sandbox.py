"""What edgec's runs leave outside the artifact: nothing under ~ but edgec's own cache, no telemetry.

- OpenVINO (and NNCF, which reuses it) sends usage telemetry through `openvino_telemetry` and creates
  `~/intel/` for its consent file. openvino_telemetry 2025.x honours no environment switch of its own
  (only a consent file under ~ written by `opt_in_out --opt_out`, or `CI=true`, which other tools read
  too), so for our process we answer its consent check with "declined" in-process: no sender threads
  or processes start (their traceback on Ctrl-C goes with them) and nothing is written to ~/intel.
- onnxruntime (1.2x) writes a telemetry device id and database to $XDG_CACHE_HOME/Microsoft/DeveloperTools
  (default ~/.cache/Microsoft) and a `.ses` file into $TMPDIR; it reads both variables once, when its
  library loads (measured: changing them after `import onnxruntime` moves nothing). So we import it
  with both pointing into edgec's cache ($EDGEC_CACHE_DIR, default ~/.cache/edgec/onnxruntime) and
  put the user's values back right after: nothing else in the process sees the change.
Called by the CLI's main and by the Python API's entry points; a process that imported onnxruntime
before edgec keeps onnxruntime's defaults (too late to move them).
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("EDGEC_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "edgec"


def pyplot():
    """matplotlib.pyplot on the Agg backend, its font cache under edgec's cache instead of ~/.cache/matplotlib
    (a compare or auto run writes nothing outside edgec's cache). ImportError when matplotlib is missing."""
    if "MPLCONFIGDIR" not in os.environ:
        where = cache_root() / "matplotlib"
        try:
            where.mkdir(parents=True, exist_ok=True)
            os.environ["MPLCONFIGDIR"] = str(where)
        except OSError:  # unwritable cache: matplotlib falls back to a temporary directory itself
            pass
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _decline_openvino_telemetry() -> None:
    try:
        from openvino_telemetry.utils import opt_in_checker as oc
    except Exception:  # not installed (or broken): nothing to silence
        return
    if getattr(oc.OptInChecker.check, "_edgec", False):
        return

    def check(self, *args, **kwargs):
        return oc.ConsentCheckResult.DECLINED

    check._edgec = True
    oc.OptInChecker.check = check


_done = False


def quiet_side_effects() -> None:
    global _done
    if _done:
        return
    _done = True
    _decline_openvino_telemetry()
    _import_onnxruntime_into(cache_root() / "onnxruntime")


def child_env(env: dict | None = None) -> dict:
    """The environment for an edgec child process (memory, board timing): onnxruntime's first import there
    writes its telemetry db under XDG_CACHE_HOME and a .ses under TMPDIR, so both point into edgec's cache,
    as `quiet_side_effects` arranges in this process (without importing onnxruntime into the child early,
    which would add to its measured memory)."""
    return {**(os.environ if env is None else env), **_onnxruntime_dirs(cache_root() / "onnxruntime")}


def _onnxruntime_dirs(where: Path) -> dict:
    """XDG_CACHE_HOME and TMPDIR under `where`, created; {} when it is unwritable (onnxruntime's defaults,
    as without edgec)."""
    try:
        (where / "tmp").mkdir(parents=True, exist_ok=True)
    except OSError:
        return {}
    return {"XDG_CACHE_HOME": str(where), "TMPDIR": str(where / "tmp")}


def _import_onnxruntime_into(where: Path) -> None:
    import sys
    if "onnxruntime" in sys.modules:
        return
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "TMPDIR")}
    os.environ.update(_onnxruntime_dirs(where))
    try:
        import onnxruntime  # noqa: F401
    except Exception:
        pass
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
