# Intentionally empty. This folder has no __init__.py, so pytest imports these test modules under their own
# (unique) names instead of as a second package called "tests" that would clash with quantplug's tests/.
