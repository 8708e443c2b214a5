"""A locust user that calls a Triton model over gRPC, with exact per-request timing.

Import this only inside locust (a locustfile imports it): it initialises gRPC for gevent, which must
happen before any gRPC channel exists or the users run one at a time.

Settings come from locust's command line (``--model``, ``--batch-size``, ``--input-shape``,
``--inputs``, ``--timings-dir``, ``--grpc-timeout``) or the matching ``QUANTPLUG_LOADTEST_*`` environment
variables; in distributed mode the master passes them to its workers. Each request is reported through
``events.request`` with its exact ``perf_counter`` time in milliseconds; server errors are reported as
failures. :mod:`quantplug.loadtest.collect` records every request's exact time (``--timings-dir``,
``--timed-run``): workers ship theirs to the master, which writes them; the standalone or master process
logs exact p50/p95/p99 when the test stops.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

# isort: off
import locust  # noqa: F401  (monkey-patches the standard library for gevent; must come first)
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any gRPC channel exists, or the users serialize
# isort: on

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from locust import User, constant, events, task  # noqa: E402
from locust.exception import StopUser  # noqa: E402

from quantplug.loadtest.collect import option  # noqa: E402  (also registers the exact-timing listeners)
from quantplug.loadtest.inputs import InputSpec, load_npz, make_arrays, parse_input_shape  # noqa: E402
from quantplug.loadtest.preflight import describe_model, parse_url, request_specs  # noqa: E402

__all__ = ["TritonGrpcUser"]

log = logging.getLogger("quantplug.loadtest")
_EXIT_WATCHDOG_S = 5.0
_exit_code = {"code": 0}


@events.quitting.add_listener
def _exit_watchdog(environment: Any, **_: Any) -> None:
    """End this process if it is still alive a few seconds after locust began quitting.

    With tritonclient over gRPC under gevent, locust sometimes hangs at exit after its results are
    written, ignoring SIGTERM (seen here: after the summary, and in a worker's own shutdown). The
    watchdog is a real OS thread (not a greenlet), so a stuck event loop cannot hold it up; it exits with
    locust's own exit code (from the quit event when that fired).
    """
    from gevent import monkey

    runner = environment.runner
    failed = runner is not None and bool(runner.errors or runner.exceptions)
    options = environment.parsed_options
    code = environment.process_exit_code
    if code is None:
        code = int(getattr(options, "exit_code_on_error", 1)) if failed else 0
    _exit_code["code"] = code
    start_thread = monkey.get_original("_thread", "start_new_thread")
    real_sleep = monkey.get_original("time", "sleep")

    def watchdog() -> None:
        real_sleep(_EXIT_WATCHDOG_S)
        code = _exit_code["code"]
        sys.stderr.write(f"quantplug: locust did not exit {_EXIT_WATCHDOG_S:.0f} s after quitting "
                         f"(gRPC hang at exit); forcing exit code {code}\n")
        sys.stderr.flush()
        os._exit(code)

    start_thread(watchdog, ())


@events.quit.add_listener
def _remember_exit_code(exit_code: int = 0, **_: Any) -> None:
    _exit_code["code"] = exit_code


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_: Any) -> None:
    parser.add_argument("--model", type=str, env_var="QUANTPLUG_LOADTEST_MODEL", default="",
                        help="Triton model name to call", include_in_web_ui=True)
    parser.add_argument("--batch-size", type=int, env_var="QUANTPLUG_LOADTEST_BATCH_SIZE", default=1,
                        help="rows per request (the model's batch dimension)", include_in_web_ui=True)
    parser.add_argument("--input-shape", type=str, env_var="QUANTPLUG_LOADTEST_INPUT_SHAPE", default="",
                        help="dims without the batch, e.g. 3x224x224 or input_ids:128,attention_mask:128; "
                             "default: read from the server's model metadata")
    parser.add_argument("--inputs", type=str, env_var="QUANTPLUG_LOADTEST_INPUTS", default="",
                        help=".npz of real inputs keyed by input name (rows tiled to the batch)")
    parser.add_argument("--grpc-timeout", type=float, env_var="QUANTPLUG_LOADTEST_GRPC_TIMEOUT", default=60.0,
                        help="seconds before one request counts as failed")


# ---- the user ------------------------------------------------------------------------------------------

_specs_cache: dict[tuple[Any, ...], list[InputSpec]] = {}


def _request_specs(url: str, model: str, batch_size: int, input_shape: str) -> list[InputSpec]:
    key = (url, model, batch_size, input_shape)
    if key not in _specs_cache:
        info = describe_model(url, model)
        _specs_cache[key] = request_specs(info, batch_size, parse_input_shape(input_shape))
    return _specs_cache[key]


class TritonGrpcUser(User):
    """Sends inference requests to one Triton model over gRPC, back to back (closed loop).

    The request's inputs are random (or rows of ``--inputs``), generated once per user.
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        env = self.environment
        self.model = str(option(env, "model", ""))
        self.timeout = float(option(env, "grpc_timeout", 60.0))
        try:
            if not self.model:
                raise ValueError("no model: pass --model NAME (or QUANTPLUG_LOADTEST_MODEL)")
            host, port = parse_url(self.host or "")
            url = f"{host}:{port}"
            specs = _request_specs(url, self.model, int(option(env, "batch_size", 1)),
                                   str(option(env, "input_shape", "")))
            real_path = str(option(env, "inputs", ""))
            arrays = make_arrays(specs, np.random.default_rng(), load_npz(real_path) if real_path else None)
        except Exception as e:
            env.events.request.fire(request_type="grpc", name=self.model or "?", response_time=0.0,
                                    response_length=0, exception=e, context={})
            log.error("Triton gRPC user cannot start: %s", e)
            raise StopUser() from e
        self.client = grpcclient.InferenceServerClient(url)
        self.inputs = []
        for s in specs:
            inp = grpcclient.InferInput(s.name, list(s.shape), s.datatype)
            inp.set_data_from_numpy(arrays[s.name])
            self.inputs.append(inp)
        self._context = {"batch_size": specs[0].shape[0] if specs and specs[0].shape else 1}

    @task
    def infer(self) -> None:
        exception: BaseException | None = None
        length = 0
        start_time = time.time()
        t0 = time.perf_counter()
        try:
            result = self.client.infer(self.model, self.inputs, client_timeout=self.timeout)
            length = sum(len(c) for c in result.get_response().raw_output_contents)
        except Exception as e:  # server errors and timeouts are failures, never dropped
            exception = e
        ms = (time.perf_counter() - t0) * 1000.0
        self.environment.events.request.fire(request_type="grpc", name=self.model, response_time=ms,
                                             response_length=length, exception=exception,
                                             context=self._context, start_time=start_time)

    def on_stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
