"""Real English sentences that ship offline: first sentences of Python standard-library docstrings.

The standard library's source is parsed with :mod:`ast` (nothing is imported or executed). From every
module, class and function docstring the first sentence of the first paragraph is kept when it looks
like prose (40-200 ASCII characters, at least 6 words, starts with a capital letter, ends with a period,
no code or doctest markers). Duplicates are dropped and the selection is the ``limit`` sentences with the
smallest SHA-1 digest: deterministic for a given Python version, and spread over the whole library.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sysconfig
from pathlib import Path

__all__ = ["stdlib_sentences"]

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "ensurepip", "turtledemo",
              "__pycache__", "config-3"}  # fmt: skip
_FIRST_SENTENCE = re.compile(r"^(.+?[a-z0-9)][.])(?:\s|$)")
_CODE = re.compile(r">>>|::|\b__\w+__\b|[{}\[\]<>=`|\\$@#~^]|\w\.\w|\w_\w|\(\)")


def _first_sentence(doc: str) -> str | None:
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    m = _FIRST_SENTENCE.match(paragraph)
    if not m:
        return None
    s = m.group(1)
    if not (40 <= len(s) <= 200 and s.isascii() and s[0].isupper() and len(s.split()) >= 6):
        return None
    if _CODE.search(s) or "copyright" in s.lower():
        return None
    return s


def _source_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).parts
        if any(part in _SKIP_DIRS or part.startswith("config-") for part in rel[:-1]):
            continue
        if rel[-1].startswith("test_"):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_sentences(limit: int = 3000) -> list[str]:
    """Up to ``limit`` distinct English sentences from standard-library docstrings, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, None] = {}
    for path in _source_files(root):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=str(path))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=True)
                if doc and (s := _first_sentence(doc)):
                    found.setdefault(s, None)
    ranked = sorted(found, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    return ranked[:limit]
