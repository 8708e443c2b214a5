"""Staging and journaled landing for repository writes (see :mod:`quantplug.triton.repository`).

Layout, next to the repository (never inside it: Triton tries to load every folder of the root)::

    <parent>/.<repo name>.staging/
        lock                    flock: exclusive while landing, shared while a server reads the repository
        <pid>-<random>/         one transaction of one `repo add`
            owners              the pid that stages it (see quantplug.workdirs)
            <model>/            a staged model: config.pbtxt, version/ (or 1/ for a new model)
            journal.json        written once everything is staged: the renames that land it

A transaction whose owner is dead is finished from its journal (every step is a rename, redone only
if its source is still there), or removed when it has no journal (nothing of it was visible).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from ..errors import RepositoryError
from ..workdirs import OWNERS_FILE, add_owner, process_alive

__all__ = ["Transaction", "hidden_root_folders", "leftovers", "repair", "serving_lock", "staging_root"]

JOURNAL = "journal.json"
_T = TypeVar("_T", bound="Transaction")
_LOCK = "lock"


def staging_root(repo: Path) -> Path:
    repo = repo.resolve()
    return repo.parent / f".{repo.name}.staging"


@contextlib.contextmanager
def _locked(root: Path, shared: bool = False) -> Iterator[None]:
    with open(root / _LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _alive(txn: Path) -> bool:
    try:
        lines = (txn / OWNERS_FILE).read_text().split("\n")
    except OSError:
        return False
    for line in lines:
        parts = line.split()
        if parts and parts[0].isdigit() and process_alive(int(parts[0]), parts[1] if len(parts) > 1 else ""):
            return True
    return False


def _transactions(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())


def _path(repo: Path, txn: Path, where: str, rel: str) -> Path:
    return (repo if where == "repo" else txn) / rel


def _apply(repo: Path, txn: Path, steps: list[dict[str, object]]) -> None:
    """Do each rename whose source is still there (so a replay after a kill redoes only what is left)."""
    for step in steps:
        src = _path(repo, txn, *step["src"])  # type: ignore[misc]
        dst = _path(repo, txn, *step["dst"])  # type: ignore[misc]
        if not src.exists():
            continue  # done before
        if step["op"] == "replace":
            os.replace(src, dst)
            continue
        if dst.exists():
            if step.get("aside"):
                continue  # the replaced folder is aside and its successor already landed
            raise RepositoryError(f"cannot land {src}: {dst} appeared meanwhile (written by something other than "
                                  "quantplug); move one of them away and run `quantplug repo check --repair`")
        os.rename(src, dst)


def _remaining(repo: Path, txn: Path, steps: list[dict[str, object]]) -> list[str]:
    left = []
    for step in steps:
        src = _path(repo, txn, *step["src"])  # type: ignore[misc]
        if src.exists() and step["op"] == "move" and step["dst"][0] == "repo":  # type: ignore[index]
            left.append(str(step["what"]))
    return left


def _read_journal(txn: Path) -> dict[str, object] | None:
    try:
        return dict(json.loads((txn / JOURNAL).read_text()))
    except (OSError, ValueError):
        return None


def _recover(repo: Path, root: Path) -> list[str]:
    """Finish or remove every transaction of a dead owner (the caller holds the exclusive lock)."""
    done = []
    for txn in _transactions(root):
        if _alive(txn):
            continue
        journal = _read_journal(txn)
        if journal is not None:
            steps = list(journal["steps"])  # type: ignore[call-overload]
            left = _remaining(repo, txn, steps)
            _apply(repo, txn, steps)
            if left:
                done.append(f"finished the interrupted landing of {', '.join(left)} (from {txn})")
        else:
            done.append(f"removed {txn}, staged by a `repo add` killed before landing")
        shutil.rmtree(txn, ignore_errors=True)
    return done


def leftovers(repo: Path) -> list[str]:
    """What killed writers left, as `repo check` problems (read only)."""
    problems = []
    for txn in _transactions(staging_root(repo)):
        if _alive(txn):
            continue
        journal = _read_journal(txn)
        if journal is None:
            problems.append(f"{txn}: staged by a `repo add` that was killed before landing (none of it is in the "
                            "repository); `quantplug repo check --repair` removes it")
            continue
        steps = list(journal["steps"])  # type: ignore[call-overload]
        left = _remaining(repo, txn, steps)
        landed = [str(s["what"]) for s in steps if s["op"] == "move" and s["dst"][0] == "repo"  # type: ignore[index]
                  and str(s["what"]) not in left]
        problems.append(f"interrupted `repo add`: {', '.join(left) or 'its config files'} not landed yet"
                        f"{' (landed: ' + ', '.join(landed) + ')' if landed else ''}; the next `quantplug repo add` "
                        "or `quantplug serve` finishes it, or run `quantplug repo check --repair`")
    for folder in hidden_root_folders(repo):
        problems.append(f"{folder}: hidden folder in the repository root; Triton tries to load it as a model (a "
                        "strict start fails on it): remove it (`quantplug repo check --repair` removes the "
                        "staging leftovers of older quantplug versions)")
    return problems


def hidden_root_folders(repo: Path) -> list[Path]:
    return sorted(p for p in repo.iterdir() if p.is_dir() and p.name.startswith(".")) if repo.is_dir() else []


def repair(repo: Path) -> list[str]:
    """Finish interrupted landings, remove dead staging, and clear older versions' staging from the root."""
    done: list[str] = []
    root = staging_root(repo)
    if root.is_dir():
        with _locked(root):
            done += _recover(repo, root)
    for folder in hidden_root_folders(repo):
        name, _, tail = folder.name[1:].rpartition(".replaced-")
        if name and tail.isdigit() and not process_alive(int(tail)):  # replace_model's old aside folder
            if not (repo / name).exists():
                os.rename(folder, repo / name)
                done.append(f"put back {repo / name} from {folder} (a replace was killed midway)")
            else:
                shutil.rmtree(folder)
                done.append(f"removed {folder} (the model it replaced is in place)")
        elif folder.name.endswith(".tmp"):
            shutil.rmtree(folder)
            done.append(f"removed {folder} (staging of an older quantplug's killed `repo add`)")
    return done


@contextlib.contextmanager
def serving_lock(repo: Path) -> Iterator[list[str]]:
    """Finish interrupted landings, then hold the lock shared (no landing meanwhile) while Triton reads.

    Yields what recovery did. Where the staging folder cannot be made (a read-only parent), nothing
    quantplug writes can land either, and it yields without a lock.
    """
    root = staging_root(repo)
    try:
        root.mkdir(exist_ok=True)
        (root / _LOCK).touch()
    except OSError:
        yield []
        return
    with _locked(root):
        done = _recover(repo, root)
    with _locked(root, shared=True):
        yield done


class Transaction:
    """Stage models outside the repository, then land them together (``land``); a context manager.

    ``stage_dir(name)`` is the folder to write model ``name`` into (``config.pbtxt`` and ``version/``);
    ``add(name, ...)`` records it. Leaving the ``with`` block removes whatever was not landed.
    """

    def __init__(self, repo: Path) -> None:
        if repo.exists() and not repo.is_dir():
            raise RepositoryError(f"{repo} is a file, not a repository folder; pick a folder path")
        repo.mkdir(parents=True, exist_ok=True)
        self.repo = repo
        self.root = staging_root(repo)
        try:
            self.root.mkdir(exist_ok=True)
        except OSError as e:
            raise RepositoryError(f"cannot create the staging folder {self.root} next to the repository ({e.strerror}); "
                                  f"make {self.root.parent} writable") from e
        if os.stat(self.root).st_dev != os.stat(repo).st_dev:
            raise RepositoryError(f"{repo} is a mount point: its staging folder {self.root} is on another filesystem, "
                                  "where a rename is not atomic; mount the folder above the repository instead")
        self.dir = Path(tempfile.mkdtemp(dir=self.root, prefix=f"{os.getpid()}-"))
        add_owner(self.dir, os.getpid())
        self._models: list[tuple[str, bool, dict[str, Path]]] = []

    def stage_dir(self, name: str) -> Path:
        return self.dir / name

    def add(self, name: str, *, replace: bool = False, model_files: dict[str, Path] | None = None) -> None:
        self._models.append((name, replace, dict(model_files or {})))

    def land(self) -> dict[str, Path]:
        """Land every staged model under the exclusive lock; returns each model's new version folder."""
        (self.dir / "replaced").mkdir()
        with _locked(self.root):
            _recover(self.repo, self.root)
            steps: list[dict[str, object]] = []
            result: dict[str, Path] = {}
            for name, replace, model_files in self._models:
                staged, model_dir = self.stage_dir(name), self.repo / name
                for fname, src in model_files.items():
                    shutil.copyfile(src, staged / fname)
                if replace or not model_dir.exists():
                    os.rename(staged / "version", staged / "1")
                    if model_dir.exists():
                        steps.append({"op": "move", "src": ["repo", name], "dst": ["txn", f"replaced/{name}"],
                                      "aside": True, "what": f"old {name}"})
                    steps.append({"op": "move", "src": ["txn", name], "dst": ["repo", name],
                                  "what": f"model {name} version 1"})
                    result[name] = model_dir / "1"
                    continue
                version = str(_next_version(model_dir))
                steps.append({"op": "move", "src": ["txn", f"{name}/version"], "dst": ["repo", f"{name}/{version}"],
                              "what": f"{name} version {version}"})
                for fname in ("config.pbtxt", *model_files):
                    steps.append({"op": "replace", "src": ["txn", f"{name}/{fname}"], "dst": ["repo", f"{name}/{fname}"],
                                  "what": f"{name}/{fname}"})
                result[name] = model_dir / version
            tmp = self.dir / f"{JOURNAL}.tmp"
            tmp.write_text(json.dumps({"repo": str(self.repo.resolve()), "steps": steps}, indent=1))
            os.replace(tmp, self.dir / JOURNAL)  # the commit point: from here on it lands, even after a kill
            try:
                _apply(self.repo, self.dir, steps)
            except BaseException:
                (self.dir / OWNERS_FILE).write_text("")  # let the next writer or --repair finish it
                raise
        shutil.rmtree(self.dir, ignore_errors=True)
        return result

    def __enter__(self: _T) -> _T:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.dir.exists() and _read_journal(self.dir) is None:
            shutil.rmtree(self.dir, ignore_errors=True)


def _next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions) + 1 if versions else 1
