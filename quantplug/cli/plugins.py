"""``quantplug plugins``: every loaded plugin, where it comes from, and what it registered.

Broken plugins (an import error, an unknown hook, a name clash, a broken contract) do not hide the
healthy ones: every plugin is listed, the broken ones marked with why, and the command then fails with
one line per broken plugin.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import PluginError


def plugin_table() -> list[dict[str, Any]]:
    """One row per plugin (healthy or broken); a broken one has ``error`` set."""
    from ..plugins import get_plugin_manager
    from ..registry import KINDS, build_registry

    pm = get_plugin_manager(strict=False)
    registry = build_registry(pm)
    registered = registry.by_plugin()
    broken = {f.name: f for f in pm.failures}
    rows = []
    for name, info in pm.plugin_info.items():
        plugin = pm.get_plugin(name)
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or [])) if plugin is not None else []
        failure = broken.pop(name, None)
        row: dict[str, Any] = {
            "name": name, "distribution": info.distribution, "version": info.version, "builtin": info.builtin,
            "hooks": hooks, "error": failure.message if failure else None,
        }
        row.update({kind: sorted(registered.get(name, {}).get(kind, [])) for kind in KINDS})
        rows.append(row)
    for failure in broken.values():  # failed before it was registered (an import error, an unknown hook)
        row = {"name": failure.name, "distribution": failure.distribution, "version": failure.version,
               "builtin": False, "hooks": [], "error": failure.message}
        row.update({kind: [] for kind in KINDS})
        rows.append(row)
    return rows


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """List plugins (built-in and installed), their hooks and what they registered; broken plugins are
    marked (and make the command fail) without hiding the healthy ones."""
    rows = plugin_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            origin = "built-in" if row["builtin"] else f"{row['distribution'] or '?'} {row['version'] or ''}".rstrip()
            click.echo(f"{row['name']}  ({origin}){'  BROKEN' if row['error'] else ''}")
            if row["error"]:
                click.echo(f"    error: {row['error']}")
                continue
            click.echo(f"    hooks: {', '.join(row['hooks']) or '-'}")
            for kind in ("methods", "calibrators", "backends", "workloads"):
                if row[kind]:
                    click.echo(f"    {kind}: {', '.join(row[kind])}")
    errors = [row["error"] for row in rows if row["error"]]
    if errors:
        raise PluginError("\nError: ".join(errors))
