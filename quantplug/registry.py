"""Names to implementations, filled through the ``register_*`` hooks.

Built-in and third-party plugins register the same way; the registry refuses a duplicate name
(naming both plugins) and answers an unknown name with the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, runtime_checkable

from .errors import DuplicateNameError, PluginError, UnknownNameError

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "KINDS",
    "Backend",
    "CONTRACTS",
    "Calibrator",
    "Contract",
    "Method",
    "MethodCost",
    "Registry",
    "Scheme",
    "Workload",
    "build_registry",
    "declared",
]

Kind = Literal["methods", "calibrators", "backends", "workloads"]
KINDS: tuple[Kind, ...] = ("methods", "calibrators", "backends", "workloads")


@dataclass(frozen=True)
class Scheme:
    """The quantization scheme a runtime executes fast and correctly.

    ``prepare`` obeys it from the start, so QAT trains exactly what will run.
    """

    name: str
    activation_dtype: Literal["int8", "uint8"]
    activation_symmetric: bool
    weight_dtype: Literal["int8"] = "int8"
    weight_per_channel: bool = True
    weight_axis: int = 0
    int4_weights: bool = True  # whether INT4 weight-only QDQ may be exported for this target
    min_opset: int = 13
    # CPU-dependent integer range: True for runtimes whose x86 U8S8 kernels saturate 16-bit pair sums on
    # CPUs without VNNI/AMX (see quantplug.cpu); such a scheme is specialised per serving CPU by for_cpu().
    cpu_sensitive: bool = False
    cpu: str | None = None  # the serving CPU ISA this scheme was specialised for (None: any)
    weight_qmax: int | None = None  # 8-bit weight range [-qmax, qmax]; None = 127 (64: 7-bit as ONNX Runtime reduce_range, exact without VNNI)

    def for_cpu(self, isa: str | None) -> Scheme:
        """This scheme for a serving CPU ISA (``quantplug.cpu``): 7-bit weights where U8S8 saturates."""
        if not self.cpu_sensitive or isa is None:
            return self
        from dataclasses import replace

        from .cpu import saturates

        return replace(self, cpu=isa, weight_qmax=64 if saturates(isa) else None)

    def weight_range(self, bits: int) -> int:
        """The symmetric integer weight range [-q, q] for ``bits``-bit weights in this scheme."""
        full = 2 ** (bits - 1) - 1
        return min(full, self.weight_qmax) if self.weight_qmax is not None and bits == 8 else full

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- The contracts -----------------------------------------------------------------------------------
# Each kind's members: required ones (checked when a plugin registers an object) and optional ones with
# their defaults, declared once here. A registered object that lacks an optional member reads it as the
# default (the registry hands out a thin view, see ``_Declared``), so the engine never guesses.


@dataclass(frozen=True)
class Contract:
    """What a registered object of one kind must have (``attributes``, ``callables``) and may have
    (``optional``: member -> default)."""

    kind: str
    attributes: tuple[str, ...]
    callables: tuple[str, ...]
    optional: dict[str, Any]
    signature: str  # the required members in words, for errors

    def missing(self, obj: Any) -> list[str]:
        absent = [a for a in self.attributes if not hasattr(obj, a)]
        absent += [c for c in self.callables if not callable(getattr(obj, c, None))]
        return absent


@dataclass(frozen=True)
class MethodCost:
    """What choosing a method costs, declared by the method: a rank (cheaper first; ``advise`` and
    ``tune`` order methods by it), the cost in words (``{epochs}`` is filled in) and the data it needs."""

    rank: int
    cost: str
    needs: str


CONTRACTS: dict[str, Contract] = {
    "methods": Contract(
        "method", ("name", "description"), ("apply",),
        {"needs_training_data": False, "needs_labels": False, "needs_calibration": True, "prepare": None,
         "calibration_only": False, "cost": None},
        "name, description, apply(model, recipe, context)"),
    "calibrators": Contract(
        "calibrator", ("name", "description"), ("compute_range",), {"with_recipe": None},
        "name, description, compute_range(histogram, bits, symmetric)"),
    "backends": Contract(
        "backend", ("name", "description", "scheme"), ("configure", "write_model"),
        {"check_onnx": None, "flavours": ()},
        "name, description, scheme, configure(config, ...), write_model(version_dir, onnx_path, config, ...)"),
    "workloads": Contract(
        "workload", ("name", "description"), ("build_model", "example_inputs", "calibration_batches"),
        {"metric": "accuracy", "input_names": ("input",), "output_names": ("output",), "has_labels": True,
         "train_lr": 1e-3, "train_batches": None, "loss": None},
        "name, description, build_model(seed, progress), example_inputs(batch_size), "
        "calibration_batches(batch_size, seed)"),
}


@runtime_checkable
class Method(Protocol):
    """A quantization method: ``ptq``, ``qat``, ``qad``, ``dynamic`` or a plugin's (docs/plugins.md).

    Required: ``name``, ``description``, ``apply(model, recipe, context) -> nn.Module``, which takes the
    prepared (BN-folded, fake-quant inserted) model and a :class:`quantplug.QuantContext` and returns the
    quantized module. Optional (defaults in :data:`CONTRACTS`): ``needs_training_data`` (False),
    ``needs_labels`` (False), ``needs_calibration`` (True), ``prepare(model, recipe, scheme,
    example_inputs)`` (None: the engine's prepare), ``calibration_only`` (False; True when ``apply`` is
    exactly ``context.calibrate(model)``, so ``tune`` may build it for every calibrator from one shared
    histogram pass), ``cost`` (None: a :class:`MethodCost` for ``advise`` and ``tune``'s order).
    """

    name: str
    description: str
    needs_training_data: bool
    needs_labels: bool
    needs_calibration: bool
    prepare: Callable[..., Any] | None
    calibration_only: bool
    cost: MethodCost | None

    def apply(self, model: Any, recipe: Any, context: Any) -> Any: ...


@runtime_checkable
class Calibrator(Protocol):
    """Turns a collected activation histogram into a range ``(low, high)`` for ``bits`` bits.

    Optional: ``with_recipe(recipe) -> Calibrator`` (None), to read settings from the recipe.
    """

    name: str
    description: str
    with_recipe: Callable[[Any], Any] | None

    def compute_range(self, histogram: Any, bits: int, symmetric: bool) -> tuple[float, float]: ...


@runtime_checkable
class Backend(Protocol):
    """An export target and serving backend: its ``scheme`` and how it fills a Triton model folder.

    Optional: ``check_onnx(model_proto)`` (None), the runtime's rules over the exported QDQ graph
    (raise ExportError naming the node); ``flavours`` (()), the first being the default.
    """

    name: str
    description: str
    scheme: Scheme
    check_onnx: Callable[[Any], None] | None
    flavours: tuple[str, ...]

    def configure(self, config: Any, *, flavour: str, kind: str | None, threads: int | None,
                  options: dict[str, Any]) -> None: ...

    def write_model(self, version_dir: Any, onnx_path: Any, config: Any, *, flavour: str,
                    options: dict[str, Any]) -> None: ...


@runtime_checkable
class Workload(Protocol):
    """A model factory, its data (calibration, training, held-out test) and its metric (docs/internals.md).

    Optional members and their defaults are in :data:`CONTRACTS` (``metric="accuracy"``, ``input_names``,
    ``output_names``, ``has_labels=True``, ``train_lr=1e-3``, ``train_batches`` and ``loss``: None when
    absent). ``test_set()`` and ``score(outputs, targets)`` come together or not at all.
    """

    name: str
    description: str
    metric: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    has_labels: bool
    train_lr: float
    train_batches: Callable[..., Any] | None
    loss: Callable[..., Any] | None

    def build_model(self, seed: int = 0, progress: bool = True) -> Any: ...

    def example_inputs(self, batch_size: int = 1) -> Any: ...

    def calibration_batches(self, batch_size: int, seed: int = 0) -> Any: ...

    # Evaluation (optional: a workload without a held-out test set has neither; check with hasattr).
    def test_set(self) -> tuple[dict[str, Any], Any]: ...

    def score(self, outputs: Any, targets: Any) -> dict[str, float]: ...


class _Declared:
    """A registered object seen through its contract: a member it lacks reads as the declared default."""

    __slots__ = ("_defaults", "_obj")

    def __init__(self, obj: Any, defaults: dict[str, Any]) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_defaults", defaults)

    def __getattr__(self, name: str) -> Any:
        try:
            return getattr(self._obj, name)
        except AttributeError:
            if name in self._defaults:
                return self._defaults[name]
            raise

    def __repr__(self) -> str:
        return repr(self._obj)


def declared(kind: str, obj: Any) -> Any:
    """``obj`` with the optional members of ``kind``'s contract filled in with their defaults (``obj``
    itself when it has them all). For objects that did not come through a registry (e.g. a user's own
    workload passed to :func:`quantplug.quantize`)."""
    if obj is None or isinstance(obj, _Declared):
        return obj
    absent = {k: v for k, v in CONTRACTS[kind].optional.items() if not hasattr(obj, k)}
    return _Declared(obj, absent) if absent else obj


@dataclass
class _Entry:
    obj: Any
    plugin: str


@dataclass
class Registry:
    """Registered components by kind, each remembering which plugin registered it."""

    entries: dict[str, dict[str, _Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def check(self, kind: Kind, obj: Any, plugin: str) -> str:
        """The object's name, after checking it against ``kind``'s contract (PluginError if it fails)."""
        contract = CONTRACTS[kind]
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f'plugin "{plugin}" registered a {contract.kind} without a string "name" attribute '
                f"({obj!r}); give the object a unique name"
            )
        missing = contract.missing(obj)
        if missing:
            raise PluginError(
                f'plugin "{plugin}" registered {contract.kind} "{name}" without {", ".join(missing)}; a '
                f"{contract.kind} needs {contract.signature} (docs/plugins.md)"
            )
        table = self.entries[kind]
        if name in table:
            raise DuplicateNameError(
                f'{contract.kind} "{name}" is registered by both plugin "{table[name].plugin}" and plugin '
                f'"{plugin}"; uninstall or disable one (QUANTPLUG_LOAD_PLUGINS) or rename it'
            )
        return name

    def add(self, kind: Kind, obj: Any, plugin: str) -> None:
        name = self.check(kind, obj, plugin)
        self.entries[kind][name] = _Entry(declared(kind, obj), plugin)

    def get(self, kind: Kind, name: str) -> Any:
        table = self.entries[kind]
        if name not in table:
            valid = ", ".join(sorted(table)) or "none"
            raise UnknownNameError(
                f'unknown {kind[:-1]} "{name}"; valid: {valid} (see `quantplug plugins` for where each '
                "comes from)"
            )
        return table[name].obj

    def names(self, kind: Kind) -> list[str]:
        return sorted(self.entries[kind])

    def plugin_of(self, kind: Kind, name: str) -> str:
        return self.entries[kind][name].plugin

    def by_plugin(self) -> dict[str, dict[str, list[str]]]:
        out: dict[str, dict[str, list[str]]] = {}
        for kind, table in self.entries.items():
            for name, entry in table.items():
                out.setdefault(entry.plugin, {k: [] for k in KINDS})[kind].append(name)
        return out

    # Typed shortcuts.
    def method(self, name: str) -> Method:
        return cast(Method, self.get("methods", name))

    def calibrator(self, name: str) -> Calibrator:
        return cast(Calibrator, self.get("calibrators", name))

    def backend(self, name: str) -> Backend:
        return cast(Backend, self.get("backends", name))

    def workload(self, name: str) -> Workload:
        return cast(Workload, self.get("workloads", name))

    def methods(self) -> list[Method]:
        return [self.method(n) for n in self.names("methods")]


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every ``register_*`` hook of ``pm`` (a fresh default manager if None) into a new Registry.

    Each plugin's registrations land together or not at all. A plugin that breaks a contract, clashes
    with another's name or crashes is a PluginError naming it; when ``pm`` was made with
    ``strict=False`` it is recorded in ``pm.failures`` instead and what it registered is left out.
    """
    from .plugins import PluginFailure, QuantplugPluginManager, check_hooks, get_plugin_manager

    pm = pm or get_plugin_manager()
    strict = getattr(pm, "strict", True)
    if isinstance(pm, QuantplugPluginManager):
        check_hooks(pm)  # plugins registered after the manager was built, e.g. by a test
    registry = Registry()
    failed: set[str] = set()
    for kind in KINDS:
        hookname = f"register_{kind}"
        impls = getattr(pm.hook, hookname).get_hookimpls()
        plugins = [impl.plugin for impl in impls]
        for plugin in plugins:
            plugin_name = pm.get_name(plugin) or repr(plugin)
            if plugin_name in failed:
                continue
            # Call one plugin at a time (through pluggy, so tracing sees it) to know who registered what.
            caller = pm.subset_hook_caller(hookname, remove_plugins=[p for p in plugins if p is not plugin])
            staged: list[tuple[str, Any]] = []

            def register(obj: Any, _kind: Kind = kind, _plugin: str = plugin_name,  # type: ignore[assignment]
                         _staged: list[tuple[str, Any]] = staged) -> None:
                name = registry.check(_kind, obj, _plugin)
                if any(n == name for n, _ in _staged):
                    raise DuplicateNameError(f'plugin "{_plugin}" registered {_kind[:-1]} "{name}" twice')
                _staged.append((name, obj))

            try:
                try:
                    caller(register=register)
                except PluginError:
                    raise
                except Exception as e:  # a plugin's own bug: name it
                    raise PluginError(
                        f'plugin "{plugin_name}" failed in {hookname}: {type(e).__name__}: {e}; '
                        "disable it with QUANTPLUG_LOAD_PLUGINS or report it to its author"
                    ) from e
            except PluginError as e:
                if strict or not isinstance(pm, QuantplugPluginManager):
                    raise
                info = pm.plugin_info.get(plugin_name)
                pm.failures.append(PluginFailure(plugin_name, info.distribution if info else None,
                                                 info.version if info else None, str(e)))
                failed.add(plugin_name)
                for table in registry.entries.values():  # what it registered under earlier kinds goes too
                    for n in [n for n, entry in table.items() if entry.plugin == plugin_name]:
                        del table[n]
                continue
            for _, obj in staged:
                registry.add(kind, obj, plugin_name)
    return registry
