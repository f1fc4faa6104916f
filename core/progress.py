"""Progress on stderr (stdout stays clean for --json). Off when stderr is not a terminal, unless
EDGEC_PROGRESS=1; EDGEC_PROGRESS=0 silences it everywhere."""
from __future__ import annotations

import os
import sys

from tqdm import tqdm


def enabled() -> bool:
    flag = os.environ.get("EDGEC_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no")
    return sys.stderr.isatty()


def bar(iterable=None, total=None, desc: str = "", unit: str = "it"):
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled(),
                leave=False, dynamic_ncols=True)


def say(msg: str) -> None:
    """A one-line status message for people; quiet when progress is off and stderr is not a terminal.
    Also a checkpoint: a signal whose KeyboardInterrupt a toolchain swallowed stops the work here."""
    from edgec.core import interrupt
    interrupt.check()
    if enabled():
        print(f"edgec: {msg}", file=sys.stderr, flush=True)
