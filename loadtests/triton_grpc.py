"""Locust load test for a model served by Triton, over gRPC.

    locust -f loadtests/triton_grpc.py --host 127.0.0.1:8001 --model resnet18_int8 --batch-size 8
    locust -f loadtests/triton_grpc.py --host 127.0.0.1:8001 --model resnet18_int8 --batch-size 8 \
        --headless -u 4 -r 4 -t 30s --timings-dir out/

Options (also as environment variables QUANTPLUG_LOADTEST_MODEL, _BATCH_SIZE, _INPUT_SHAPE, _INPUTS,
_TIMINGS_DIR, _GRPC_TIMEOUT):
  --model NAME          the Triton model to call (required)
  --batch-size B        rows per request (default 1)
  --input-shape DIMS    dims without the batch, e.g. 3x224x224 or input_ids:128,attention_mask:128;
                        by default read from the server's model metadata
  --inputs FILE.npz     real inputs keyed by input name instead of random ones
  --timings-dir DIR     write every request's exact time to DIR/timings.csv (DIR/done.json when complete)
  --grpc-timeout S      seconds before a request counts as failed (default 60)

Every request is reported through locust's request event with its exact time (ms, perf_counter); server
errors are failures. Locust's own percentiles are rounded to whole ms under 100 ms: the exact p50/p95/p99
are logged when the test stops, and `quantplug loadtest` computes them from the timings file. Works with
the web UI, headless, and distributed (--master / --worker): workers send their timings to the master.
"""

from quantplug.loadtest.grpc_user import TritonGrpcUser

__all__ = ["TritonGrpcUser"]
