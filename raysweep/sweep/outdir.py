"""The output folder of a sweep: one driver at a time (a lock), and enough room to write (a probe), checked before
Ray starts."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path

__all__ = ["MIN_FREE_BYTES", "OutputInUse", "OutputLock", "ResultsWriteError", "check_writable", "iso_time", "state_key"]

#: Free space (bytes) the output folder must have before a sweep starts: Parquet rows are small, but every running
#: trial keeps one or two model checkpoints (tens of MB each) until it ends.
MIN_FREE_BYTES = 256 * 2**20


class OutputInUse(OSError):
    """Another ``raysweep run`` holds the output folder's lock."""


class ResultsWriteError(OSError):
    """The output folder cannot be written (read-only, disk full, permissions)."""


def state_key(path: Path) -> str:
    import hashlib

    return hashlib.sha1(str(path).encode()).hexdigest()[:8]


def iso_time(t: float) -> str:
    """``t`` (seconds since the epoch) as an ISO 8601 UTC timestamp, as sweep.json records times."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


def check_writable(out: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Fail early, before Ray starts, when ``out`` cannot hold a sweep: not creatable, not writable, or less than
    ``min_free`` bytes free. Raises :class:`ResultsWriteError` naming the folder and the fix; writes nothing."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".raysweep-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise ResultsWriteError(exc.errno, f"the output folder {out} is not writable ({exc.strerror or exc}): fix its "
                                "permissions, free space, or choose another --out") from None
    free = shutil.disk_usage(out).free
    if free < min_free:
        raise ResultsWriteError(errno.ENOSPC, f"only {free / 2**20:.0f} MiB free under {out}; a sweep needs at least "
                                f"{min_free / 2**20:.0f} MiB (the running trials' checkpoints and the results): free "
                                "space or choose another --out")


class OutputLock:
    """An exclusive lock on an output folder (``<out>/.lock``, ``flock``): one ``raysweep run`` per folder.

    The kernel releases it when the holder exits, however it exits (a SIGKILLed driver leaves no stale lock), so the
    rerun that resumes a killed sweep takes it without help. On NFS, ``flock`` works across hosts only with NFSv4
    and a lock-enabled mount; elsewhere run one driver per folder by hand.
    """

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"pid {info['pid']} on {info['host']}, since {info['since']}"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise OutputInUse(errno.EBUSY, f"{self.path.parent} is in use by another `raysweep run` ({who}); wait "
                              "for it to finish (or stop it), or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": iso_time(time.time())}).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (deleting it would race a waiting process)
            self.fd = None
