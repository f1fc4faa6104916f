"""`edgec pack` / `unpack`: an entropy-coded, hash-checked archive of an artifact directory (OTA payloads).

Weights dominate an artifact and zstd codes them poorly (its literals are Huffman-coded per block:
>= 1 bit per byte, and sparse INT8 weights carry less). So each file is cut into segments: the INT8
weight blobs (found by format: an ONNX file's int8/uint8 initializers, an OpenVINO .bin's i8/u8
constants read from the .xml beside it) are coded by constriction's ANS coder under their own byte
distribution, everything else by zstd at its strongest level. A file of unknown format (a TVM .so)
is one zstd segment. Unpacking re-assembles every file byte for byte and checks its size and
sha256 against the archive's index before anything is published (temporary directory, then rename).

Layout: b"EDGECPK1", u32 index length, the index (JSON), then the blobs it points to.

Delta (`--base OLD_ARTIFACT`): the device already holds the earlier artifact, so a file whose sha256
the base has under the same name is not sent at all, and a changed file's zstd part is coded with the
base's file as a raw-content dictionary (zstd's long matches find whatever survived the change). The
index names every base file it relies on by sha256; unpacking with `--base` checks them first.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from edgec.core.errors import InputError

MAGIC = b"EDGECPK1"
MIN_SEGMENT = 1024  # smaller blobs gain less than their frequency table costs
ZSTD_LEVEL = 19


def _onnx_segments(path: Path, buf: bytes) -> list[tuple[int, int]]:
    import onnx

    try:
        m = onnx.load_model_from_string(buf)
    except Exception:
        return []
    out, pos = [], 0
    for t in m.graph.initializer:
        if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(t.raw_data) >= MIN_SEGMENT:
            off = buf.find(t.raw_data, pos)
            if off >= 0:
                out.append((off, len(t.raw_data)))
                pos = off + len(t.raw_data)
    return out


def _openvino_segments(path: Path, buf: bytes) -> list[tuple[int, int]]:
    xml = path.with_suffix(".xml")
    if not xml.is_file():
        return []
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return []
    out = []
    for layer in root.iter("layer"):
        data = layer.find("data")
        if layer.get("type") != "Const" or data is None or data.get("element_type") not in ("i8", "u8"):
            continue
        off, size = int(data.get("offset", -1)), int(data.get("size", 0))
        if off >= 0 and size >= MIN_SEGMENT and off + size <= len(buf):
            out.append((off, size))
    out.sort()
    merged: list[tuple[int, int]] = []
    for off, size in out:  # shared constants can repeat a range: keep disjoint ones
        if not merged or off >= merged[-1][0] + merged[-1][1]:
            merged.append((off, size))
    return merged


def _segments(path: Path, buf: bytes) -> list[tuple[int, int]]:
    if path.suffix == ".onnx":
        return _onnx_segments(path, buf)
    if path.suffix == ".bin":
        return _openvino_segments(path, buf)
    return []


def _ans_encode(data: bytes) -> bytes:
    import constriction

    sym = np.frombuffer(data, np.uint8)
    from .entropy import frequencies

    vals, idx, counts = np.unique(sym, return_inverse=True, return_counts=True)
    freq = frequencies(counts)
    head = struct.pack("<H", vals.size) + vals.astype(np.uint8).tobytes() + freq.astype("<u2").tobytes()
    if vals.size == 1:
        return head
    coder = constriction.stream.stack.AnsCoder()
    f = freq.astype(np.float64)
    coder.encode_reverse(idx.astype(np.int32), constriction.stream.model.Categorical(f / f.sum(), perfect=False))
    return head + coder.get_compressed().astype("<u4").tobytes()


def _ans_decode(blob: bytes, n: int) -> bytes:
    import constriction

    k = struct.unpack_from("<H", blob)[0]
    vals = np.frombuffer(blob, np.uint8, k, 2)
    counts = np.frombuffer(blob, "<u2", k, 2 + k).astype(np.float64)
    if k == 1:
        return bytes(vals) * n
    words = np.frombuffer(blob, "<u4", offset=2 + 3 * k).astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    idx = coder.decode(constriction.stream.model.Categorical(counts / counts.sum(), perfect=False), n)
    return vals[idx].tobytes()


def _base_files(base) -> dict[str, bytes]:
    from edgec.core.manifest import read_manifest

    b = Path(base)
    if not b.is_dir():
        raise InputError(f"--base {b} is not an artifact directory; give the earlier artifact the device holds")
    read_manifest(b)
    return {q.relative_to(b).as_posix(): q.read_bytes() for q in sorted(b.rglob("*")) if q.is_file()}


def _zstd_dict(buf: bytes):
    import zstandard

    return zstandard.ZstdCompressionDict(buf, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def pack(artifact, output, force: bool = False, base=None) -> dict:
    """Write the archive of `artifact` (a directory with manifest.json) to `output`; returns a summary.
    With `base` (an earlier artifact directory), a delta against it (module docstring)."""
    import zstandard

    from edgec.core.artifact import check_writable_parent
    from edgec.core.manifest import MANIFEST, read_manifest

    src = Path(artifact)
    if not src.is_dir():
        raise InputError(f"{src} is not an artifact directory; give the directory `edgec compile -o` wrote")
    read_manifest(src)
    out = Path(output)
    if out.exists() and not force:
        raise InputError(f"output {out} already exists; pass --force to replace it or choose another -o")
    if out.is_dir():
        raise InputError(f"output {out} is a directory; give a file name such as {out / 'artifact.edgec'}")
    check_writable_parent(out)
    old = _base_files(base) if base is not None else {}
    used_base: dict[str, str] = {}
    cz = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    files, blobs, raw_total = [], [], 0
    for p in sorted(q for q in src.rglob("*") if q.is_file()):
        buf = p.read_bytes()
        raw_total += len(buf)
        name = p.relative_to(src).as_posix()
        entry = {"name": name, "size": len(buf), "sha256": hashlib.sha256(buf).hexdigest(), "ans": []}
        prev = old.get(name)
        if prev is not None:
            used_base[name] = hashlib.sha256(prev).hexdigest()
            if used_base[name] == entry["sha256"]:
                entry["from_base"] = True
                files.append(entry)
                continue
        segs = _segments(p, buf)
        rest, pos = [], 0
        for off, size in segs:
            rest.append(buf[pos:off])
            blob = _ans_encode(buf[off:off + size])
            if len(blob) < size:
                entry["ans"].append({"offset": off, "length": size, "blob": len(blobs)})
                blobs.append(blob)
            else:
                rest.append(buf[off:off + size])
            pos = off + size
        rest.append(buf[pos:])
        entry["zstd"] = len(blobs)
        if prev is not None:
            entry["zstd_dict"] = True
            blobs.append(zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=_zstd_dict(prev)).compress(b"".join(rest)))
        else:
            blobs.append(cz.compress(b"".join(rest)))
        files.append(entry)
    index = {"format": 1, "manifest": MANIFEST, "files": files, "blobs": [len(b) for b in blobs]}
    if base is not None:
        index["base"] = used_base
    head = json.dumps(index, separators=(",", ":")).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<I", len(head)) + head)
            for b in blobs:
                f.write(b)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    packed = out.stat().st_size
    return {"artifact": str(src), "archive": str(out), "files": len(files), "raw_bytes": raw_total,
            "packed_bytes": packed, "ratio": round(raw_total / max(packed, 1), 2),
            "ans_segments": sum(len(f["ans"]) for f in files),
            **({"delta": {"base": str(base), "unchanged_files": sum(1 for f in files if f.get("from_base"))}}
               if base is not None else {})}


def _read_index(path: Path) -> tuple[dict, bytes]:
    if not path.is_file():
        raise InputError(f"archive not found: {path} (give the file `edgec pack -o` wrote)")
    data = path.read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise InputError(f"{path} is not an edgec pack (bad magic); give a file `edgec pack` wrote")
    n = struct.unpack_from("<I", data, len(MAGIC))[0]
    try:
        index = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path} is a truncated or corrupt edgec pack (unreadable index); pack the artifact again") from None
    return index, data[len(MAGIC) + 4 + n:]


def unpack(archive, output, force: bool = False, base=None) -> dict:
    """Restore the artifact in `archive` into directory `output`, every file checked by size and sha256.
    A delta archive needs `base`, the artifact it was packed against (checked file by file)."""
    import zstandard

    from edgec.core.artifact import check_output, publish

    path = Path(archive)
    index, body = _read_index(path)
    out = Path(output)
    check_output(out, force)
    old: dict[str, bytes] = {}
    if index.get("base") is not None:
        if base is None:
            raise InputError(f"{path} is a delta against an earlier artifact; pass --base OLD_ARTIFACT (the "
                             "directory it was packed against)")
        old = _base_files(base)
        for name, sha in index["base"].items():
            if name not in old or hashlib.sha256(old[name]).hexdigest() != sha:
                raise InputError(f"--base {base}: {name} is not the file this delta was packed against "
                                 "(sha256 differs or missing); give the artifact the archive was made from")
    offs = np.concatenate([[0], np.cumsum(index.get("blobs", []))]).astype(int)
    if offs[-1] != len(body):
        raise InputError(f"{path} is a truncated or corrupt edgec pack ({len(body)} of {offs[-1]} payload bytes); "
                         "pack the artifact again")
    blob = lambda i: body[offs[i]:offs[i + 1]]  # noqa: E731
    dz = zstandard.ZstdDecompressor()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for f in index["files"]:
            name = Path(f["name"])
            if name.is_absolute() or ".." in name.parts:
                raise InputError(f"{path} names a file outside the artifact ({f['name']}); refusing to unpack it")
            if f.get("from_base"):
                buf = old[f["name"]]
                if hashlib.sha256(buf).hexdigest() != f["sha256"]:
                    raise InputError(f"--base {base}: {f['name']} differs from the packed artifact's")
                dest = tmp / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(buf)
                continue
            try:
                d = zstandard.ZstdDecompressor(dict_data=_zstd_dict(old[f["name"]])) if f.get("zstd_dict") else dz
                rest = d.decompress(blob(f["zstd"]))
            except zstandard.ZstdError as e:
                raise InputError(f"{path}: {f['name']} does not decompress ({e}); the archive is corrupt") from None
            parts, pos, rpos = [], 0, 0
            for seg in f["ans"]:
                gap = seg["offset"] - pos
                parts.append(rest[rpos:rpos + gap])
                rpos += gap
                try:
                    parts.append(_ans_decode(blob(seg["blob"]), seg["length"]))
                except Exception as e:  # a corrupt blob can make the decoder itself fail
                    raise InputError(f"{path}: {f['name']} does not decode ({type(e).__name__}); the archive is "
                                     "corrupt") from None
                pos = seg["offset"] + seg["length"]
            parts.append(rest[rpos:])
            buf = b"".join(parts)
            if len(buf) != f["size"] or hashlib.sha256(buf).hexdigest() != f["sha256"]:
                raise InputError(f"{path}: {f['name']} fails its sha256 check after unpacking; the archive is corrupt")
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(buf)
        publish(tmp, out, force)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"archive": str(path), "output": str(out), "files": len(index["files"]),
            "bytes": sum(f["size"] for f in index["files"])}
