"""A plugin with a bug at import time: quantplug must name it and its package, never skip it."""

raise ImportError("fixture plugin is broken on purpose")
