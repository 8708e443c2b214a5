from __future__ import annotations

import subprocess
import sys

HEAVY = ("onnxruntime", "tritonclient", "locust", "gevent", "onnx", "transformers")


def test_import_quantplug_is_light():
    code = (
        "import sys, quantplug, quantplug.cli; quantplug.get_plugin_manager(); quantplug.build_registry();"
        f"print([m for m in {HEAVY!r} if m in sys.modules]);"
        "t = sys.modules.get('torch'); print(bool(t and t.cuda.is_initialized()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"heavy modules imported by `import quantplug`: {out[0]}"
    assert out[1] == "False", "importing quantplug initialised CUDA"
