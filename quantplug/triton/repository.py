"""Write and check Triton model repositories.

``add_model`` reads the serving signature from the ONNX graph, builds the ``ModelConfig`` protobuf, lets
plugins adjust it (``adjust_triton_config``), validates it, and only then writes. A served version is never overwritten and nothing is half-written:

- Staging happens outside the repository root, in ``<parent>/.<repo name>.staging/`` (Triton tries to
  load every folder in the root, hidden ones included, and a strict start fails on them). Each
  ``repo add`` fills its own transaction folder there, owned by its pid.
- Landing is a list of renames (a version folder to its number, a new model folder to its name, then
  each ``config.pbtxt``), written first to a journal in the transaction folder and then applied under
  an exclusive lock (``flock`` on ``<staging>/lock``). ``add_from_output`` lands FP32 and INT8 as one
  transaction.
- The guarantee, precisely: after a kill before the journal exists nothing of the add is visible; after
  a kill while landing, the journal names the renames left and whoever next takes the lock (``repo add``,
  ``serve`` / :class:`~quantplug.triton.server.TritonServer` before it starts Triton, ``repo check
  --repair``) finishes them. ``serve`` holds the lock shared until Triton has read the repository, so a
  server started by quantplug never sees one model of a pair new and the other old; ``repo check``
  reports an unfinished landing. A plain ``tritonserver`` started by hand in the microseconds between
  two renames, or after a kill before anyone finished it, can still see it: that is what a filesystem
  without multi-folder transactions allows.

Layout written::

    <repo>/<name>/config.pbtxt
    <repo>/<name>/recipe.json          (add_from_output: the recipe of the newest version)
    <repo>/<name>/<version>/model.onnx (+ model.py for the embedded flavour, model.plan for tensorrt)
    <repo>/<name>/<version>/recipe.json
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import RepositoryError
from .config import build_config, config_to_text, load_config, validate_config
from .onnx_io import read_signature
from .staging import Transaction, leftovers, repair

__all__ = ["add_from_output", "add_model", "check_repository", "model_versions", "next_version", "repair_repository",
           "replace_model"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def model_versions(model_dir: Path) -> list[int]:
    """The numeric version folders of a model folder, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> int:
    versions = model_versions(model_dir)
    return versions[-1] + 1 if versions else 1


class _Transaction(Transaction):
    def stage(self, name: str, onnx_path: str | Path, *, replace: bool = False,
              model_files: Mapping[str, Path | None] | None = None, **kwargs: Any) -> None:
        _stage_model(self.repo, self.stage_dir(name), name, onnx_path, check_existing=not replace, **kwargs)
        self.add(name, replace=replace, model_files={k: Path(v) for k, v in (model_files or {}).items() if v})


def add_model(
    repo: str | Path,
    name: str,
    onnx_path: str | Path,
    *,
    backend: str = "onnxruntime",
    flavour: str | None = "embedded",
    max_batch_size: int = 64,
    dynamic_batching: bool = True,
    preferred_batch_sizes: list[int] | None = None,
    max_queue_delay_us: int = 100,
    instance_count: int = 1,
    kind: str | None = None,
    threads: int | None = None,
    warmup: bool = True,
    extra: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    files: Mapping[str, str | Path] | None = None,
    pm: Any = None,
) -> Path:
    """Add ``onnx_path`` as the next version of model ``name`` in ``repo``; returns the new version folder.

    ``extra`` is merged into the config (protobuf JSON field names, e.g. ``{"parameters": {...}}``);
    ``options`` are backend-specific (e.g. ``{"accelerator": "tensorrt"}`` for flavour ``container``);
    ``files`` maps extra file names to copy into the version folder (e.g. ``{"recipe.json": path}``).
    """
    kwargs = dict(backend=backend, flavour=flavour, max_batch_size=max_batch_size,
                  dynamic_batching=dynamic_batching, preferred_batch_sizes=preferred_batch_sizes,
                  max_queue_delay_us=max_queue_delay_us, instance_count=instance_count, kind=kind,
                  threads=threads, warmup=warmup, extra=extra, options=options, files=files, pm=pm)
    with _Transaction(Path(repo)) as txn:
        txn.stage(name, onnx_path, **kwargs)
        return txn.land()[name]


def _stage_model(
    repo: Path,
    into: Path,
    name: str,
    onnx_path: str | Path,
    *,
    backend: str = "onnxruntime",
    flavour: str | None = "embedded",
    max_batch_size: int = 64,
    dynamic_batching: bool = True,
    preferred_batch_sizes: list[int] | None = None,
    max_queue_delay_us: int = 100,
    instance_count: int = 1,
    kind: str | None = None,
    threads: int | None = None,
    warmup: bool = True,
    extra: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    files: Mapping[str, str | Path] | None = None,
    pm: Any = None,
    check_existing: bool = True,
) -> None:
    """Validate and write model ``name`` into ``into``: ``config.pbtxt`` and the version as ``version/``."""
    from google.protobuf import json_format

    from ..plugins import get_plugin_manager
    from ..registry import build_registry

    onnx_path = Path(onnx_path)
    if not _NAME.match(name):
        raise RepositoryError(f"model name {name!r} is not valid; use letters, digits, '_', '-', '.'")
    inputs, outputs = read_signature(onnx_path)
    pm = pm or get_plugin_manager()
    impl = build_registry(pm).backend(backend)
    flavour = flavour or impl.flavours[0]
    if backend == "tensorrt" and flavour == "embedded":
        flavour = "plan"  # the default flavour argument belongs to onnxruntime
    options = dict(options or {})
    config = build_config(name, inputs, outputs, max_batch_size=max_batch_size, dynamic_batching=dynamic_batching,
                          preferred_batch_sizes=preferred_batch_sizes, max_queue_delay_us=max_queue_delay_us,
                          instance_count=instance_count, warmup=warmup)
    impl.configure(config, flavour=flavour, kind=kind, threads=threads, options=options)
    from .cpu_check import record_scheme

    record_scheme(config, onnx_path, runs_here=flavour == "embedded")  # parameters + CPU mismatch warning
    if extra:
        try:
            json_format.ParseDict(extra, config)
        except json_format.ParseError as e:
            raise RepositoryError(f"extra config for {name!r} is invalid: {e}") from e
    from .integer_check import integer_warnings

    integer_warnings(name, onnx_path, backend, (files or {}).get("metrics.json"))  # tensorrt scheme, low share
    pm.hook.adjust_triton_config(config=config, model_name=name, backend=backend)
    problems = validate_config(config, folder_name=name, inputs=inputs, outputs=outputs)
    if problems:
        raise RepositoryError(f"model {name!r} config is invalid: {'; '.join(problems)}")
    model_dir = repo / name
    if check_existing and model_dir.exists():
        _check_compatible(model_dir, config)
    into.mkdir()
    version_tmp = into / "version"
    version_tmp.mkdir()
    impl.write_model(version_tmp, onnx_path, config, flavour=flavour, options=options)
    for fname, src in (files or {}).items():
        shutil.copyfile(src, version_tmp / fname)
    deferred = (version_tmp / "build.json").exists()
    file_problems = [] if deferred else validate_config(config, version_dirs=[version_tmp])
    if file_problems:
        raise RepositoryError(f"backend {backend} wrote an incomplete model {name!r}: {'; '.join(file_problems)}")
    (into / "config.pbtxt").write_text(config_to_text(config))


def _check_compatible(model_dir: Path, config: Any) -> None:
    """A new version must keep the served signature and platform: clients depend on them."""
    cfg_path = model_dir / "config.pbtxt"
    if not cfg_path.exists():
        raise RepositoryError(f"{model_dir} exists but has no config.pbtxt; remove it or pick another name")
    old = load_config(cfg_path)
    def sig(c: Any) -> tuple[Any, ...]:
        return (c.platform, c.backend, c.max_batch_size,
                tuple((t.name, t.data_type, tuple(t.dims)) for t in c.input),
                tuple((t.name, t.data_type, tuple(t.dims)) for t in c.output))
    if sig(old) != sig(config):
        raise RepositoryError(
            f"model {model_dir.name!r} already exists in {model_dir.parent} with a different signature, platform "
            "or max_batch_size; add it under a new name (or remove the old model folder)")


def replace_model(repo: str | Path, name: str, onnx_path: str | Path, **kwargs: Any) -> Path:
    """Make ``onnx_path`` model ``name``'s only version, for tools that own that name (the demo, the bench).

    Unlike :func:`add_model`, earlier versions are dropped. The new model is staged in full first (a
    failure leaves the old one untouched); landing moves the old folder aside into the staging area and
    the new one into place, as one journaled transaction. Keyword arguments go to :func:`add_model`.
    """
    with _Transaction(Path(repo)) as txn:
        txn.stage(name, onnx_path, replace=True, **kwargs)
        return txn.land()[name]


def add_from_output(repo: str | Path, quantize_output_dir: str | Path, name: str, **kwargs: Any) -> dict[str, Path]:
    """Add ``<name>_fp32`` (model_fp32.onnx) and ``<name>_int8`` (model.onnx) from a ``quantplug quantize`` folder.

    Returns ``{"fp32": version_dir, "int8": version_dir}``; ``recipe.json``/``metrics.json`` are copied
    into each version folder and ``recipe.json`` into the model folder for traceability.
    """
    src = Path(quantize_output_dir)
    if not src.is_dir():
        raise RepositoryError(f"{src} is not a folder; pass the --output folder of `quantplug quantize`")
    needed = ["model.onnx", "model_fp32.onnx"]
    missing = [f for f in needed if not (src / f).is_file()]
    if missing:
        raise RepositoryError(f"{src} lacks {', '.join(missing)}; it is not a `quantplug quantize` output folder "
                              "(rerun quantplug quantize --output DIR)")
    extras = {f: src / f for f in ("recipe.json", "metrics.json") if (src / f).is_file()}
    tags = {f"{name}_fp32": "fp32", f"{name}_int8": "int8"}
    with _Transaction(Path(repo)) as txn:  # both staged, then landed together
        for model_name, fname in ((f"{name}_fp32", "model_fp32.onnx"), (f"{name}_int8", "model.onnx")):
            txn.stage(model_name, src / fname, files=extras, model_files={"recipe.json": extras.get("recipe.json")},
                      **kwargs)
        landed = txn.land()
    return {tags[n]: path for n, path in landed.items()}


def check_repository(repo: str | Path) -> list[str]:
    """Every problem found in a model repository (ours or hand-written), each naming the file; [] if fine."""
    repo = Path(repo)
    if not repo.is_dir():
        return [f"{repo}: not a folder; pass the model repository folder (e.g. model_repository/)"]
    models = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not any((m / "config.pbtxt").exists() or model_versions(m) for m in models):
        return [f"{repo}: not a Triton model repository (no <model>/config.pbtxt inside); "
                "create models with `quantplug repo add`"]
    problems: list[str] = []
    for model_dir in models:
        problems += [f"{model_dir.name}: {p}" for p in _check_model(model_dir)]
    return problems + leftovers(repo)


def repair_repository(repo: str | Path) -> list[str]:
    """Finish what killed writers left: interrupted landings, dead staging, older versions' root staging.

    Returns one line per action (empty when there was nothing to do).
    """
    return repair(Path(repo))


def _check_model(model_dir: Path) -> list[str]:
    try:
        config = load_config(model_dir / "config.pbtxt")
    except RepositoryError as e:
        return [str(e)]
    versions = model_versions(model_dir)
    if not versions:
        return [f"{model_dir} has no numeric version folder (e.g. {model_dir}/1/)"]
    policy = config.version_policy
    if policy.HasField("specific"):
        chosen = [v for v in versions if v in set(policy.specific.versions)]
        absent = sorted(set(policy.specific.versions) - set(versions))
        extra = [f"version_policy names versions {absent} that have no folder"] if absent else []
    elif policy.HasField("all"):
        chosen, extra = versions, []
    else:
        n = policy.latest.num_versions if policy.HasField("latest") else 1
        chosen, extra = versions[-max(n, 1):], []
    inputs = outputs = None
    newest = model_dir / str(chosen[-1]) if chosen else None
    onnx_file = config.parameters["onnx_file"].string_value if "onnx_file" in config.parameters else ""
    onnx_name = onnx_file or ("model.onnx" if config.platform == "onnxruntime_onnx" else "")
    if newest is not None and onnx_name and (newest / onnx_name).is_file():
        try:
            inputs, outputs = read_signature(newest / onnx_name)
        except RepositoryError as e:
            extra.append(str(e))
    problems = validate_config(config, folder_name=model_dir.name, inputs=inputs, outputs=outputs,
                               version_dirs=[model_dir / str(v) for v in chosen])
    for v in chosen:
        if (model_dir / str(v) / "build.json").exists() and not (model_dir / str(v) / "model.plan").exists():
            problems = [p for p in problems if "model.plan is missing" not in p]
            problems.append(f"{model_dir / str(v)}: model.plan not built yet; build it on the deployment GPU "
                            "with deploy/build_engines.sh")
    return extra + problems
