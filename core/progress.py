"""Progress on stderr (stdout stays clean for --json).

Three modes, from EDGEC_PROGRESS or else whether stderr is a terminal:
  full   (a terminal, or EDGEC_PROGRESS=1)  bars, status messages, and one line per compile stage
  stages (stderr is a file or pipe: logs, CI) one line per compile stage with its time, nothing else
  off    (EDGEC_PROGRESS=0)                 nothing
"""
from __future__ import annotations

import os
import sys

OFF = ("0", "false", "no", "off")


def mode() -> str:
    flag = os.environ.get("EDGEC_PROGRESS")
    if flag is not None:
        return "off" if flag.strip().lower() in OFF else "full"
    return "full" if sys.stderr.isatty() else "stages"


def enabled() -> bool:
    """Bars and status messages (the full mode)."""
    return mode() == "full"


def bar(iterable=None, total=None, desc: str = "", unit: str = "it"):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled(),
                leave=False, dynamic_ncols=True)


def say(msg: str) -> None:
    """A one-line status message for people; quiet unless progress is in full mode.
    Also a checkpoint: a signal whose KeyboardInterrupt a toolchain swallowed stops the work here."""
    from edgec.core import interrupt
    interrupt.check()
    if enabled():
        print(f"edgec: {msg}", file=sys.stderr, flush=True)


def stage(name: str, seconds: float, total: float, ok: bool = True) -> None:
    """One line per finished compile stage, so that a log shows where a compile is and where its time went."""
    if mode() == "off":
        return
    what = "done" if ok else "failed"
    print(f"edgec: stage {name:<9} {what} {seconds:7.2f} s  (total {total:7.2f} s)", file=sys.stderr, flush=True)
