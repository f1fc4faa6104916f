"""Staging directories that say who owns them, and the lock that serializes publishing an output.

A staging dir is `.<out>.tmp-<pid>-<start>-<random>@<host>` beside the output (`.old-` for the previous
output while it is being replaced). pid + process start time + host identify the owner, so a later
compile can tell a dead owner's leftovers (SIGKILL, power loss) from a live compile's work: on the same
host, a dir whose pid is gone, or whose pid now belongs to a process started at another time (pid reuse),
is removed; a `.old-` dir of a dead owner whose output is missing holds the previous output (as `artifact/`), caught between
the two renames of a publish, and is put back instead. Dirs of other hosts (a shared filesystem) are
never touched: we cannot tell whether their owner is alive.

Publishing takes `.<out>.lock` (fcntl.flock), so racing `--force` compiles replace the output one after
the other, each rename pair complete: the output is always exactly one compile's artifact.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

_NAME = re.compile(r"^\.(?P<out>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<start>\d+)-[A-Za-z0-9_]+@(?P<host>.+)$")


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def process_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc); None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):  # no /proc (macOS): fall back to "does the pid exist"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0


def _owner_tag() -> str:
    return f"{os.getpid()}-{process_start(os.getpid()) or 0}"


def umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def make_dir(out: Path, kind: str = "tmp") -> Path:
    """A new owned staging dir beside `out`, with the permissions the umask gives a plain mkdir (mkdtemp
    makes 0700, and the artifact is renamed from it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-{_owner_tag()}-", suffix=f"@{_host()}", dir=out.parent))
    os.chmod(d, 0o777 & ~umask())
    return d


def owner_alive(pid: int, start: int) -> bool:
    now = process_start(pid)
    return now is not None and (now == 0 or start == 0 or now == start)


def clean_stale(out: Path) -> list[str]:
    """Remove staging dirs beside `out` left by dead compiles on this host; restore a stranded previous
    output. Returns what was done, for the progress log."""
    done: list[str] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return done
    host = _host()
    for d in entries:
        m = _NAME.match(d.name)
        if not m or m["out"] != out.name or m["host"] != host or not d.is_dir() or d.is_symlink():
            continue
        if owner_alive(int(m["pid"]), int(m["start"])):
            continue
        if m["kind"] == "old" and not out.exists() and (d / "artifact").is_dir():
            try:
                os.rename(d / "artifact", out)
                shutil.rmtree(d, ignore_errors=True)
                done.append(f"restored {out} from {d.name} (a compile was killed while replacing it)")
                continue
            except OSError:
                pass
        shutil.rmtree(d, ignore_errors=True)
        done.append(f"removed {d.name} (left by dead process {m['pid']})")
    return done


@contextmanager
def output_lock(out: Path):
    """Exclusive lock on `.<out>.lock`, removed on release. After acquiring, the file must still be the
    one at the path (another holder may have unlinked it on release); otherwise lock the new one."""
    import fcntl

    path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        os.close(fd)


def disk_full(where: Path, error: BaseException, margin: int = 16 << 20) -> bool:
    """Whether a toolchain failure was (most likely) a full disk: ENOSPC anywhere in the exception chain,
    or less than `margin` bytes free where the artifact was being written. TVM reports a full disk
    as "Compilation error:" from the C compiler, so the errno alone is not enough."""
    e: BaseException | None = error
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e):
            return True
        e = e.__cause__ or e.__context__
    try:
        return shutil.disk_usage(where).free < margin
    except OSError:
        return False
