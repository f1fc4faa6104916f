"""The FP32 reference's outputs, remembered across compiles (issue 17).

Every compile ends in validation against the FP32 model on onnxruntime; recompiling the same model
for another backend, precision or flag ran the reference over the same validation data again (on
EfficientNet-Lite0 with 500 images, the reference is about half of the validate stage). The outputs
depend only on the model, the inputs and the reference runtime, so they are stored under
sha256(model, onnxruntime version) and found per sample by the sha256 of the sample's feeds: any
data (a subset, another order, another file with the same images) hits what it shares, and a
changed image can never be answered with another's outputs.
"""
from __future__ import annotations

import hashlib
import os
import threading

import numpy as np

from edgec.core import cache
from edgec.core.backend import Runner

KIND = "reference"
# Outputs larger than this per compile are not stored (a segmentation net's 500 masks would be GBs).
MAX_BYTES = int(float(os.environ.get("EDGEC_REFERENCE_CACHE_MB", "256")) * (1 << 20))


def _update(h, v) -> bool:
    if isinstance(v, (list, tuple)):  # a sequence input: its arrays in order
        h.update(f"seq{len(v)}".encode())
        return all(_update(h, x) for x in v)
    if v is None:  # an absent optional input
        h.update(b"none")
        return True
    a = np.asarray(v)
    if a.dtype == object:
        return False
    a = np.ascontiguousarray(a)
    h.update(str(a.dtype).encode()); h.update(str(a.shape).encode()); h.update(a.data)
    return True


def feeds_digest(feeds) -> str | None:
    """sha256 of the feeds, or None for feeds that cannot be hashed exactly (then nothing is cached)."""
    h = hashlib.sha256()
    for k in sorted(feeds):
        h.update(k.encode())
        if not _update(h, feeds[k]):
            return None
    return h.hexdigest()[:32]


class CachedReference(Runner):
    """A ReferenceRunner that answers from the cache where it can and creates its session only when not."""

    def __init__(self, model, model_sha256: str, threads: int | None = None):
        from edgec.core.probe import version

        self._model, self.threads = model, threads
        self._key = cache.key(KIND, model_sha256, version("onnxruntime"))
        self._runner = None
        self._stored: dict[str, list[np.ndarray]] = {}
        self._new: dict[str, list[np.ndarray]] = {}
        self._new_bytes = 0
        self.hits = self.misses = self.ahead = 0
        self.unstored = 0  # runs whose outputs the store will not hold (unhashable feeds, sequences, the cap)
        # The prefetch thread (reference_prefetch.py) stores into _new while validation reads it: the lock
        # guards _new/_new_bytes, and validation waits on it for a sample the prefetch is about to compute.
        self._cond = threading.Condition()
        self._producing = False
        meta = None
        arrays = cache.load_arrays(KIND, self._key)
        if arrays is not None and "__names__" in arrays:
            names = [str(n) for n in arrays["__names__"]]
            meta = (names, str(arrays["__runtime__"]))
            for k, v in arrays.items():
                if k.startswith("s/"):
                    _, digest, i = k.split("/")
                    self._stored.setdefault(digest, [None] * len(names))[int(i)] = v
        self._meta = meta

    def _session(self):
        if self._runner is None:
            from edgec.core.validate import ReferenceRunner

            self._runner = ReferenceRunner(self._model, threads=self.threads)
            if self._meta is not None and self._meta[0] != self._runner.output_names:
                self._stored = {}  # another model under the same key cannot happen; be safe anyway
        return self._runner

    @property
    def output_names(self) -> list[str]:
        return self._meta[0] if self._meta is not None else self._session().output_names

    @property
    def runtime(self) -> str:
        return self._meta[1] if self._meta is not None else self._session().runtime

    def run(self, feeds):
        digest = feeds_digest(feeds)
        if digest is None:
            self.misses += 1
            self.unstored += 1
            return self._session().run(feeds)
        got = self._stored.get(digest) or self._wait_for(digest)
        if got is not None and all(v is not None for v in got):
            if digest in self._new:
                self.misses += 1  # computed by this compile, ahead of validation (reference_prefetch.py)
            else:
                self.hits += 1
            return dict(zip(self.output_names, got))
        self.misses += 1
        out = self._session().run(feeds)
        if not self._keep(digest, out, self._session().output_names) or digest not in self._new:
            self.unstored += 1
        return out

    def _wait_for(self, digest: str):
        """The prefetch's outputs for `digest`, waiting while it is still producing: it walks the same
        samples in the same order, so validation's next sample is the one it computes next. Meanwhile the
        artifact's runs (validate_runner's other half) use the cores the prefetch leaves, which a
        single-threaded runtime (TVM's CPU pool here) left idle when the two took turns on one thread."""
        with self._cond:
            while digest not in self._new and self._producing:
                self._cond.wait(0.5)
            return self._new.get(digest)

    def producing(self, active: bool) -> None:
        """Called by the prefetch thread as it starts (True) and ends (False, whatever stopped it)."""
        with self._cond:
            self._producing = active
            self._cond.notify_all()

    def _keep(self, digest: str, out: dict, names) -> bool:
        """Store `out` for the next compile; False once the size cap is reached."""
        values = [out[n] for n in names]
        if not all(isinstance(v, np.ndarray) and v.dtype != object for v in values):
            return True  # sequence / map outputs are not stored
        size = sum(v.nbytes for v in values)
        with self._cond:
            if self._new_bytes + size > MAX_BYTES:
                return False
            self._new[digest] = values
            self._new_bytes += size
            self._cond.notify_all()
        return True

    def compute_ahead(self, feeds, runner) -> bool:
        """The outputs for `feeds` from `runner` (a ReferenceRunner with this reference's settings), kept
        as if `run` had computed them; False when no more can be kept. Called from the prefetch thread
        only, before the validate stage's first `run`."""
        digest = feeds_digest(feeds)
        if digest is None:
            return True
        if digest in self._stored or digest in self._new:
            return True
        if self._meta is None:  # validation then needs no session of its own for the names
            self._meta = (list(runner.output_names), runner.runtime)
        if not self._keep(digest, runner.run(feeds), runner.output_names) or digest not in self._new:
            return False  # full, or outputs that are not kept (sequences, maps): validation computes its own
        self.ahead += 1
        return True

    def report(self) -> dict:
        """hits: answered from an earlier compile's store; misses: computed by this compile, of which
        `ahead` by the prefetch thread before validation began."""
        return {"hits": self.hits, "misses": self.misses, **({"ahead": self.ahead} if self.ahead else {})}

    def save(self) -> None:
        """Store what this run computed (with what was stored before) for the next compile."""
        if not self._new:
            return
        names = self.output_names
        arrays = {"__names__": np.array(names), "__runtime__": np.array(self.runtime)}
        kept = 0
        for store in (self._new, self._stored):
            for digest, values in store.items():
                if f"s/{digest}/0" in arrays or any(v is None for v in values):
                    continue
                size = sum(v.nbytes for v in values)
                if kept + size > MAX_BYTES:
                    self.unstored += store is self._new
                    continue
                kept += size
                for i, v in enumerate(values):
                    arrays[f"s/{digest}/{i}"] = v
        cache.save_arrays(KIND, self._key, arrays)
        self._new = {}

    def complete(self) -> bool:
        """Whether every run so far is answered by the store from now on."""
        return self.unstored == 0

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()


def coverage_key(model_sha256: str, data_path, *selection) -> str | None:
    """A key for "the store answers every sample of this data file": the file by path, size and mtime
    (no decoding) and what selects and shapes its samples. None when the data is not a file."""
    from edgec.core.probe import version

    fk = cache.file_key(data_path) if isinstance(data_path, (str, os.PathLike)) else None
    return None if fk is None else cache.key(KIND + "-coverage", model_sha256, version("onnxruntime"), fk, *selection)


def covered(k: str | None) -> bool:
    """A hint only: on a wrong "yes" validation computes what the store lacks itself, one thread slower."""
    return k is not None and cache.enabled() and bool(cache.recall(KIND, k))


def mark_covered(k: str | None, samples: int) -> None:
    if k is not None and cache.enabled():
        cache.remember(KIND, k, lambda: {"samples": samples})
