"""SIGINT / SIGTERM: stop promptly, keep the previous output, exit 130 / 143.

The handler raises `Interrupted` (a KeyboardInterrupt) where Python happens to be, and also records the
signal. The record matters because toolchains swallow exceptions: TVM's FFI turns a KeyboardInterrupt
raised in a Python callback into a TVMError that `except Exception` blocks (MetaSchedule's design-space
generation, the builder pool) eat, and a compile went on to publish with exit 0. `check()` re-raises a
recorded signal; the compile calls it between stages and the publish step calls it, with signals
blocked, right before the rename that commits the artifact, so an interrupted compile never publishes.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_pending: int | None = None
_previous: dict = {}


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + self.signum)


def _handler(signum, frame):
    global _pending
    _pending = signum
    raise Interrupted(signum)


def install() -> None:
    """Called by the CLI's main (only there: a library must not take over its host's signals)."""
    global _pending
    _pending = None
    for s in EXIT_CODES:
        _previous.setdefault(s, signal.signal(s, _handler))


def restore() -> None:
    """Put back the handlers `install` replaced (the CLI runs in-process in tests and notebooks)."""
    global _pending
    while _previous:
        s, h = _previous.popitem()
        signal.signal(s, h if h is not None else signal.SIG_DFL)
    _pending = None


def pending() -> int | None:
    return _pending


def check() -> None:
    """Raise `Interrupted` if a signal arrived, even one whose exception something swallowed."""
    if _pending is not None:
        raise Interrupted(_pending)


@contextmanager
def deferred():
    """Signals wait until the block is done (publishing, cleaning up); a blocked one is raised afterwards."""
    sigs = set(EXIT_CODES)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
