"""Triton python-backend model written by quantplug-openvino: serves an ONNX file with OpenVINO (CPU).

Config parameters (config.pbtxt ``parameters``):
  onnx_file              the ONNX file in the version folder (default model.onnx)
  inference_num_threads  OpenVINO CPU threads; 0 = available cores / instances of this model
  inference_precision    f32 (default: FP32 parts stay FP32, equal to the fake-quant model), bf16 or f16

Every request of a dynamic batch is concatenated into one OpenVINO run and the outputs split back; an
error is returned to the request that caused it (never raised), so the model stays up.
"""

import json
import os

import numpy as np
import openvino as ov
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
        threads = int(_param(config, "inference_num_threads", "0"))
        if threads <= 0:
            instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
            threads = max(1, len(os.sched_getaffinity(0)) // instances)
        core = ov.Core()
        model = core.read_model(path)
        graph_inputs = {name for port in model.inputs for name in port.get_names()}
        missing = [n for n in self.input_names if n not in graph_inputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"config inputs {sorted(missing)} are not inputs of the ONNX model ({sorted(graph_inputs)})")
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _param(config, "inference_precision", "f32"), "ENABLE_CPU_PINNING": False})
        self.ports = [self.compiled.output(n) for n in self.output_names]
        self.request = self.compiled.create_infer_request()

    def _feeds(self, request):
        feeds = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"request has no input {name!r}")
            feeds[name] = tensor.as_numpy()
        return feeds

    def _run(self, feeds):
        result = self.request.infer(feeds)
        return [np.array(result[port]) for port in self.ports]  # copies: the request reuses its buffers

    def _response(self, outputs):
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.output_names, outputs, strict=True)])

    @staticmethod
    def _error(exc):
        text = " ".join(str(exc).split())
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"{type(exc).__name__}: {text[:2000]}"))

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
        self.request = None
        self.compiled = None
