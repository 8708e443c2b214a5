"""``quantplug plugins``: every loaded plugin, where it comes from, and what it registered."""

from __future__ import annotations

import json
from typing import Any

import click


def plugin_table() -> list[dict[str, Any]]:
    from ..plugins import get_plugin_manager
    from ..registry import KINDS, build_registry

    pm = get_plugin_manager()
    registry = build_registry(pm)
    registered = registry.by_plugin()
    rows = []
    for name, info in pm.plugin_info.items():
        plugin = pm.get_plugin(name)
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        rows.append(
            {
                "name": name,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "hooks": hooks,
                **{kind: sorted(registered.get(name, {}).get(kind, [])) for kind in KINDS},
            }
        )
    return rows


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """List plugins (built-in and installed), their hooks and what they registered."""
    rows = plugin_table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        origin = "built-in" if row["builtin"] else f"{row['distribution']} {row['version']}"
        click.echo(f"{row['name']}  ({origin})")
        click.echo(f"    hooks: {', '.join(row['hooks']) or '-'}")
        for kind in ("methods", "calibrators", "backends", "workloads"):
            if row[kind]:
                click.echo(f"    {kind}: {', '.join(row[kind])}")
