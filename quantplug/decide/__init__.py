"""Deciding how to quantize: ``advise`` (the flowchart as rules), ``tune`` (the search that reaches an
accuracy budget cheapest-first) and ``sensitivity`` (per-layer analysis).

Import the submodules directly (``quantplug.decide.tune``); this package imports nothing heavy.
"""

from __future__ import annotations

from .advise import RULES, Advice, Situation, advise

__all__ = ["RULES", "Advice", "Situation", "advise"]
