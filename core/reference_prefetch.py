"""The FP32 reference's validation outputs, computed on otherwise idle CPU while the compile works (issue 17).

Validation needs the reference's output on every validation sample, and those depend on the source
model and the data alone, not on anything the compile decides. On a first INT8 compile of
EfficientNet-Lite0 (500 validation images, 2 cores) they were 6 of the validate stage's 12 s, while
in the ~30 s before it (the optimizer, the quantizer's Python, GPTQ) the process used 1.4 cores on
average. So from the data stage on, a thread at the lowest CPU priority (nice 19: the scheduler gives
it only cycles no other thread wants) runs the reference over its own copy of the validation data
into the CachedReference that the validate stage reads. Validation takes it over still running: it
runs the artifact on each chunk of samples while the prefetch computes the next chunk's reference, and
waits only for a reference not computed yet. Taking turns on one thread instead left a core idle for
a runtime that runs on one (TVM's pool on this 2-core host: EfficientNet-Lite0 fp32 validation 32 s,
19 of them the artifact and 10.5 the reference). Its session has validation's own settings (threads,
no spinning), so the numbers are the ones validation would have computed.

Only where a thread's priority can be lowered (Linux); elsewhere it would compete with the compile
and is not started. EDGEC_PREFETCH=0 turns it off.
"""
from __future__ import annotations

import os
import threading

from edgec.core.reference_cache import CachedReference

MIN_SAMPLES = 16  # below this the validate stage's own reference runs are not worth a thread
MAX_MODEL_BYTES = 512 << 20  # a second session of a bigger model would hold its weights twice meanwhile


def _lower_priority() -> bool:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only (Linux)
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 19
    except (AttributeError, OSError):
        return False


class ReferencePrefetch:
    """A background pass of the reference over `open_data()` into `reference` (see the module docstring)."""

    def __init__(self, reference: CachedReference, model, open_data, threads: int | None):
        self.reference = reference
        self._model, self._open, self._threads = model, open_data, threads
        self._stop = threading.Event()
        self.error: str | None = None
        reference.producing(True)  # before the thread exists: validation never misses a sample it will make
        self._thread = threading.Thread(target=self._work, name="edgec-reference-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        runner = None
        try:
            if not _lower_priority():
                return
            from edgec.core.validate import ReferenceRunner, sample_feeds

            data = self._open()
            # Created here, so the session's pool threads inherit this thread's priority.
            runner = ReferenceRunner(self._model, threads=self._threads)
            if runner.runtime != "onnxruntime":
                return  # onnx's reference evaluator is Python: it would hold the GIL the compile needs
            for sample in data:
                if self._stop.is_set() or runner.runtime != "onnxruntime":  # (a kernel's refusal switches it)
                    return
                if not self.reference.compute_ahead(sample_feeds(sample), runner):
                    return
        except Exception as e:  # noqa: BLE001 - validation meets the same problem itself and reports it
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.reference.producing(False)
            if runner is not None:
                runner.close()

    def handover(self) -> CachedReference:
        """The reference, the pass still running: its `run` waits for what the pass is about to compute."""
        return self.reference

    def finish(self) -> CachedReference:
        """Stop the pass (within one sample) and hand over the reference; the thread is gone after this."""
        self._stop.set()
        self._thread.join()
        return self.reference


def start(c) -> None:
    """The compile stage: start the prefetch when there is validation data worth it, read from a path
    or a list of samples (a caller's own Dataset object is not iterated from a second thread)."""
    o = c.opts
    if os.environ.get("EDGEC_PREFETCH", "1") == "0" or c.val is None or len(c.val) < MIN_SAMPLES:
        return
    if not isinstance(o.validation, (str, os.PathLike, list, tuple)):
        return
    from edgec.core import stages
    from edgec.core.reference_cache import covered

    if covered(stages.reference_coverage(c)):
        return  # every sample's outputs are stored: nothing to compute ahead
    path = c.source["path"]
    if (os.path.getsize(path) if path and os.path.isfile(path) else c.source_model.ByteSize()) > MAX_MODEL_BYTES:
        return
    # Its own Dataset (own file handle and decode memo, nothing shared with c.val).
    c.reference = ReferencePrefetch(stages.reference_for(c), c.source["path"] or c.source_model,
                                    lambda: stages.validation_data(c), o.threads)


def stop(c) -> None:
    """Stop a prefetch that validation did not take over (a failed or interrupted compile)."""
    ahead = getattr(c, "reference", None)
    if isinstance(ahead, ReferencePrefetch):
        ahead.finish()
