"""The error hierarchy.

Every error a user can cause or fix is a :class:`QuantplugError`; the CLI prints it as one line and
exits non-zero. Anything else reaching the CLI is a bug and keeps its traceback.
Messages name the thing, the rule that was broken, and the fix.
"""

from __future__ import annotations

__all__ = [
    "QuantplugError",
    "ConfigError",
    "PluginError",
    "DuplicateNameError",
    "UnknownNameError",
    "CalibrationError",
    "TrainingDivergedError",
    "ExportError",
    "ParityError",
    "RepositoryError",
    "ServerError",
    "LoadTestError",
]


class QuantplugError(Exception):
    """Base class: a problem the user can fix, reported as one clear line."""

    exit_code = 2


class ConfigError(QuantplugError):
    """A recipe, option, file or input that is invalid (names the value and the valid choices)."""


class PluginError(QuantplugError):
    """A plugin failed to load or misbehaved; names the plugin and its distribution."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name for the same kind of component."""


class UnknownNameError(ConfigError):
    """A method, calibrator, backend or workload name that no plugin registered."""


class CalibrationError(QuantplugError):
    """Calibration could not produce valid ranges (empty data, NaN/Inf activations, ...)."""


class TrainingDivergedError(QuantplugError):
    """QAT or QAD diverged (NaN or steadily rising loss)."""


class ExportError(QuantplugError):
    """ONNX export or a target rule check failed; names the offending node."""


class ParityError(QuantplugError):
    """The runtime's outputs differ from the fake-quant model beyond the parity tolerance."""


class RepositoryError(QuantplugError):
    """A Triton model repository or model config is invalid."""


class ServerError(QuantplugError):
    """The Triton server could not be started, or a model failed to load."""


class LoadTestError(QuantplugError):
    """A load test could not run, hung, or failed its gate."""
