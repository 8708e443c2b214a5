"""Names to implementations, filled through the ``register_*`` hooks.

Built-in and third-party plugins register the same way; the registry refuses a duplicate name
(naming both plugins) and answers an unknown name with the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .errors import DuplicateNameError, PluginError, UnknownNameError

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "KINDS",
    "Backend",
    "Calibrator",
    "Method",
    "Registry",
    "Scheme",
    "Workload",
    "build_registry",
]

KINDS = ("methods", "calibrators", "backends", "workloads")
Kind = Literal["methods", "calibrators", "backends", "workloads"]


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


@runtime_checkable
class Method(Protocol):
    """A quantization method: ``ptq``, ``qat``, ``qad``, ``dynamic`` or a plugin's.

    ``apply(model, recipe, context)`` takes the prepared (BN-folded, fake-quant inserted) model and a
    :class:`quantplug.quant.context.QuantContext` and returns the quantized module. ``needs_training_data``
    says whether it trains; ``needs_labels`` whether that training needs labels.
    """

    name: str
    description: str

    def apply(self, model: Any, recipe: Any, context: Any) -> Any: ...


@runtime_checkable
class Calibrator(Protocol):
    """Turns a collected activation histogram into a range ``(low, high)`` for ``bits`` bits."""

    name: str
    description: str

    def compute_range(self, histogram: Any, bits: int, symmetric: bool) -> tuple[float, float]: ...


@runtime_checkable
class Backend(Protocol):
    """An export target and serving backend: its ``scheme`` and how it fills a Triton model folder."""

    name: str
    description: str
    scheme: Scheme


@runtime_checkable
class Workload(Protocol):
    """A model factory, its data (calibration, training, held-out test) and its metric."""

    name: str
    description: str


@dataclass
class _Entry:
    obj: Any
    plugin: str


@dataclass
class Registry:
    """Registered components by kind, each remembering which plugin registered it."""

    entries: dict[str, dict[str, _Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def add(self, kind: Kind, obj: Any, plugin: str) -> None:
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f'plugin "{plugin}" registered a {kind[:-1]} without a string "name" attribute '
                f"({obj!r}); give the object a unique name"
            )
        table = self.entries[kind]
        if name in table:
            raise DuplicateNameError(
                f'{kind[:-1]} "{name}" is registered by both plugin "{table[name].plugin}" and plugin '
                f'"{plugin}"; uninstall or disable one (QUANTPLUG_LOAD_PLUGINS) or rename it'
            )
        table[name] = _Entry(obj, plugin)

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
    def method(self, name: str) -> Any:
        return self.get("methods", name)

    def calibrator(self, name: str) -> Any:
        return self.get("calibrators", name)

    def backend(self, name: str) -> Any:
        return self.get("backends", name)

    def workload(self, name: str) -> Any:
        return self.get("workloads", name)


def build_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every ``register_*`` hook of ``pm`` (a fresh default manager if None) into a new Registry."""
    from .plugins import get_plugin_manager

    pm = pm or get_plugin_manager()
    registry = Registry()
    for kind in KINDS:
        hookname = f"register_{kind}"
        impls = getattr(pm.hook, hookname).get_hookimpls()
        plugins = [impl.plugin for impl in impls]
        for plugin in plugins:
            plugin_name = pm.get_name(plugin) or repr(plugin)
            # Call one plugin at a time (through pluggy, so tracing sees it) to know who registered what.
            caller = pm.subset_hook_caller(hookname, remove_plugins=[p for p in plugins if p is not plugin])

            def register(obj: Any, _kind: Kind = kind, _plugin: str = plugin_name) -> None:  # type: ignore[assignment]
                registry.add(_kind, obj, _plugin)

            try:
                caller(register=register)
            except PluginError:
                raise
            except Exception as e:  # a plugin's own bug: name it
                raise PluginError(
                    f'plugin "{plugin_name}" failed in {hookname}: {type(e).__name__}: {e}; '
                    "disable it with QUANTPLUG_LOAD_PLUGINS or report it to its author"
                ) from e
    return registry
