"""One writer per data file: a lock file beside it.

``<file>.lock`` is created with O_CREAT | O_EXCL (atomic on local and NFS v3+ file
systems) and holds the holder's pid, host, start time and command line. A second writer
is refused at once with a message naming the file and the holder. A lock left by a
crashed job (its pid no longer alive on this host) is taken over with a warning; a lock
held from another host cannot be checked from here and is refused, naming the lock file
to delete once that job is known to be gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


class FileLocked(RuntimeError):
    """Another job holds the data file."""


def lock_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def exclusive(path, command: str | None = None):
    """Hold ``path`` for writing during the ``with`` block (see the module doc)."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": command or " ".join(sys.argv)}
    _acquire(lock, holder, path)
    try:
        yield lock
    finally:
        if _read(lock).get("pid") == holder["pid"] and _read(lock).get("host") == holder["host"]:
            lock.unlink(missing_ok=True)


def _acquire(lock: Path, holder: dict, path) -> None:
    for attempt in (1, 2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read(lock)
            if attempt == 1 and _stale(other) and _take_over(lock, other):
                log.warning("%s: took over the stale lock of pid %s on %s (started %s: "
                            "that process is gone)", path, other.get("pid"),
                            other.get("host"), other.get("started"))
                continue
            raise FileLocked(_refusal(path, lock, other)) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(holder, fh)
        return


def _take_over(lock: Path, stale: dict) -> bool:
    """Remove a stale lock; False when a live job took the lock meanwhile (renames are
    atomic, so of two jobs taking over at once only one moves the stale lock away)."""
    grave = lock.with_name(f"{lock.name}.{os.getpid()}.stale")
    try:
        os.rename(lock, grave)
    except FileNotFoundError:  # another job removed it first: try to create ours
        return True
    if _read(grave) != stale:  # moved a lock created meanwhile: put it back
        os.rename(grave, lock)
        return False
    grave.unlink()
    return True


def _read(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _stale(holder: dict) -> bool:
    """A holder on this host whose process no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _refusal(path, lock: Path, holder: dict) -> str:
    if not holder:
        return (f"{path} is locked by {lock}, which cannot be read (being written, or "
                "corrupt): delete it if no job is writing this file")
    return (f"{path} is being written by pid {holder.get('pid')} on {holder.get('host')} "
            f"since {holder.get('started')} ({holder.get('command')!r}); wait for it to "
            f"finish, or delete {lock} if that job is gone")
