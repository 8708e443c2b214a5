"""Work folders that name their owners: a later run removes exactly the folders of dead owners."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from quantplug.workdirs import OWNERS_FILE, add_owner, clean_stale, make_workdir, process_alive

PREFIX = f"quantplug-test-workdirs-{os.getpid()}-"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_folders_of_dead_owners_are_removed() -> None:
    mine = make_workdir(PREFIX)  # owned by this (live) process
    dead = make_workdir(PREFIX)
    (dead / OWNERS_FILE).write_text("")
    add_owner(dead, _dead_pid())
    foreign = Path(tempfile.mkdtemp(prefix=PREFIX))  # no owners file: not ours to judge
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        shared = make_workdir(PREFIX)
        (shared / OWNERS_FILE).write_text(f"{_dead_pid()}\n")  # one owner dead, one alive
        add_owner(shared, sleeper.pid)
        removed = clean_stale(PREFIX)
        assert removed == [dead]
        assert mine.is_dir() and foreign.is_dir() and shared.is_dir() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert clean_stale(PREFIX) == [shared]  # its last owner is gone now
    for folder in (mine, foreign):
        (folder / OWNERS_FILE).unlink(missing_ok=True)
        folder.rmdir()


def test_a_recycled_pid_is_not_the_owner() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(os.getpid(), start_time="1")  # same pid, another start time: another process
    assert not process_alive(_dead_pid())
