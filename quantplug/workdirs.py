"""Private temporary work folders that say who owns them, so a later run can clean up after a killed one.

A process killed with SIGKILL cannot remove its temporary folder. Every folder made here holds an
``owners`` file naming the processes that use it (pid and start time, so a recycled pid is not taken for
the owner). :func:`clean_stale` removes the folders of a prefix whose owners are all gone; a folder
without that file (made by someone else, or by an older quantplug) is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["add_owner", "clean_stale", "make_workdir", "process_alive"]

OWNERS_FILE = "owners"


def _start_time(pid: int) -> str:
    """The process start time in clock ticks since boot (Linux), or '' where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of stat; fields after the command name


def process_alive(pid: int, start_time: str = "") -> bool:
    """Whether process ``pid`` exists and (when ``start_time`` is given) is the same process as then."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    return not start_time or _start_time(pid) in ("", start_time)


def add_owner(folder: Path, pid: int) -> None:
    """Record ``pid`` as a user of ``folder`` (the folder counts as stale only when every owner is gone)."""
    with open(folder / OWNERS_FILE, "a") as f:
        f.write(f"{pid} {_start_time(pid)}\n")


def make_workdir(prefix: str) -> Path:
    """A new private folder under the system temp folder, owned by this process."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    add_owner(folder, os.getpid())
    return folder


def _owners(folder: Path) -> list[tuple[int, str]] | None:
    try:
        lines = (folder / OWNERS_FILE).read_text().splitlines()
    except OSError:
        return None
    owners = []
    for line in lines:
        parts = line.split()
        if parts and parts[0].isdigit():
            owners.append((int(parts[0]), parts[1] if len(parts) > 1 else ""))
    return owners or None


def clean_stale(prefix: str) -> list[Path]:
    """Remove this user's ``<tmp>/<prefix>*`` folders whose owners are all dead; returns what was removed."""
    removed = []
    root = Path(tempfile.gettempdir())
    for folder in sorted(root.glob(f"{prefix}*")):
        with contextlib.suppress(OSError):
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            owners = _owners(folder)
            if owners is None or any(process_alive(pid, start) for pid, start in owners):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
