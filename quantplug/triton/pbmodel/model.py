"""Triton python-backend model written by quantplug: serves an ONNX file with ONNX Runtime.

Config parameters (config.pbtxt ``parameters``):
  onnx_file         the ONNX file in the version folder (default model.onnx)
  intra_op_threads  ONNX Runtime intra-op threads; 0 = available cores / instances of this model
  allow_spinning    "1" (ONNX Runtime default, lowest latency) or "0" (leave idle cores to others)
  providers         comma-separated execution providers (default CPUExecutionProvider)
  reject_non_finite "1" (default): a request whose float inputs hold NaN or Inf gets an error (an INT8
                    model would answer it with confident logits, where FP32 answers NaN); "0" passes them

Every request of a dynamic batch is concatenated into one ONNX Runtime run and the outputs split back;
an error is returned to the request that caused it (never raised), so the model stays up.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _param(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.batched = config.get("max_batch_size", 0) > 0
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        path = os.path.join(args["model_repository"], args["model_version"], _param(config, "onnx_file", "model.onnx"))
        threads = int(_param(config, "intra_op_threads", "0"))
        if threads <= 0:
            instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
            threads = max(1, len(os.sched_getaffinity(0)) // instances)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if _param(config, "allow_spinning", "1") == "0":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.reject_non_finite = _param(config, "reject_non_finite", "1") != "0"
        providers = _param(config, "providers", "CPUExecutionProvider").split(",")
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        graph_inputs = {i.name for i in self.session.get_inputs()}
        if set(self.input_names) != graph_inputs:
            raise pb_utils.TritonModelException(
                f"config inputs {sorted(self.input_names)} differ from the ONNX inputs {sorted(graph_inputs)}")

    def _feeds(self, request):
        feeds = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"request has no input {name!r}")
            value = tensor.as_numpy()
            if self.reject_non_finite and value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = int(value.size - np.count_nonzero(np.isfinite(value)))
                raise ValueError(f"input {name!r} has {bad} NaN/Inf value(s); send finite values (this model "
                                 "rejects non-finite inputs: config parameter reject_non_finite)")
            feeds[name] = value
        return feeds

    def _run(self, feeds):
        return self.session.run(self.output_names, feeds)

    def _response(self, outputs):
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.output_names, outputs, strict=True)])

    @staticmethod
    def _error(exc):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds = {}
        for i, request in enumerate(requests):
            try:
                feeds[i] = self._feeds(request)
            except Exception as e:  # noqa: BLE001 - reported to that request only
                responses[i] = self._error(e)
        good = list(feeds)
        if len(good) > 1 and self.batched and self._stackable([feeds[i] for i in good]):
            sizes = [feeds[i][self.input_names[0]].shape[0] for i in good]
            merged = {n: np.concatenate([feeds[i][n] for i in good]) for n in self.input_names}
            try:
                outputs = self._run(merged)
            except Exception:  # noqa: BLE001 - fall back to one run per request, so errors land right
                outputs = None
            if outputs is not None:
                start = 0
                for i, size in zip(good, sizes, strict=True):
                    responses[i] = self._response([o[start:start + size] for o in outputs])
                    start += size
                return responses
        for i in good:
            try:
                responses[i] = self._response(self._run(feeds[i]))
            except Exception as e:  # noqa: BLE001
                responses[i] = self._error(e)
        return responses

    def _stackable(self, all_feeds):
        for name in self.input_names:
            first = all_feeds[0][name]
            for f in all_feeds[1:]:
                if f[name].shape[1:] != first.shape[1:] or f[name].dtype != first.dtype:
                    return False
        return True

    def finalize(self):
        self.session = None
