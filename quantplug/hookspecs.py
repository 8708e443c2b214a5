"""Every hook a quantplug plugin can implement.

Plugins implement these with ``@quantplug.hookimpl`` and never import pluggy themselves.
Hooks are called with keyword arguments; an implementation may accept any subset of them.
New arguments are only ever added, so existing plugins keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "quantplug"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[Any], None]


@hookspec
def register_methods(register: Register) -> None:
    """Register quantization methods.

    Runs once, when a :class:`quantplug.registry.Registry` is built from the plugin manager.
    Call ``register(method)`` for each method object; a method has a unique ``name`` (str), a one-line
    ``description``, and ``apply(model, recipe, context) -> torch.nn.Module``; ``context`` is a
    :class:`quantplug.QuantContext` (the method API). Optional members (``needs_*``, ``prepare``,
    ``calibration_only``, ``cost``) default as declared in :data:`quantplug.registry.CONTRACTS`; a
    missing required member is an error naming the plugin (see :class:`quantplug.registry.Method`).
    Return nothing.
    """


@hookspec
def register_calibrators(register: Register) -> None:
    """Register calibrators, which turn an activation histogram into a quantization range.

    Runs once per registry. Call ``register(calibrator)``; a calibrator has a ``name`` and
    ``compute_range(histogram, bits, symmetric) -> (low, high)`` (see
    :class:`quantplug.registry.Calibrator`). Return nothing.
    """


@hookspec
def register_backends(register: Register) -> None:
    """Register export/serving backends (a runtime and the quantization scheme it executes fast).

    Runs once per registry. Call ``register(backend)``; a backend has a ``name``, a ``scheme``
    (:class:`quantplug.registry.Scheme`), ``configure(...)`` and ``write_model(...)`` that fill a Triton
    model folder, and optionally ``check_onnx(model_proto)`` with the runtime's rules over the exported
    graph (see :class:`quantplug.registry.Backend`). Return nothing.
    """


@hookspec
def register_workloads(register: Register) -> None:
    """Register workloads: a model factory, its data and its metric.

    Runs once per registry. Call ``register(workload)``; see :class:`quantplug.registry.Workload`.
    Return nothing.
    """


@hookspec
def adjust_triton_config(config: Any, model_name: str, backend: str) -> None:
    """Adjust a generated Triton model config before it is validated and written.

    Runs for every model the repository writer adds. ``config`` is the
    ``tritonclient.grpc.model_config_pb2.ModelConfig`` protobuf about to be written; change it in
    place. ``model_name`` is the Triton model name and ``backend`` the quantplug backend name.
    The result is still validated, so a plugin cannot write an invalid config. Return nothing.
    """


@hookspec
def on_stage(stage: str, seconds: float, info: dict[str, Any]) -> None:
    """Observe a finished pipeline stage (for timing, logging or metrics).

    Runs after each stage of the flow ends (:data:`quantplug.stages.STAGES`): ``"prepare"``,
    ``"method"`` (which includes calibration), ``"export"``, ``"evaluate"``, ``"repository"``,
    ``"serve"``, ``"verify"``, ``"loadtest"``, ``"report"``. ``quantplug quantize`` emits the first
    four; the demo emits all of them.
    ``seconds`` is its wall time; ``info`` holds stage-specific plain values (e.g. the recipe as a
    dict, an output path). Must not modify ``info``. Return nothing.
    """
