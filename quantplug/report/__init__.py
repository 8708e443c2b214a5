"""Reports: the benchmark table, JSON written atomically, and charts."""

from __future__ import annotations

from .io import write_bytes_atomic, write_json_atomic, write_text_atomic
from .table import format_table, mean_spread

__all__ = ["format_table", "mean_spread", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]
