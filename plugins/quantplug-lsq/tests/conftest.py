# Intentionally empty. This folder has no __init__.py, so pytest imports test_lsq_method.py under its own
# (unique) name instead of as a second package called "tests" that would clash with quantplug's tests/.
