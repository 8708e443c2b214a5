"""Load-test statistics, timings files and request shapes (no server needed: pure functions and files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantplug.errors import ConfigError
from quantplug.loadtest import check_gate
from quantplug.loadtest.inputs import make_arrays, parse_input_shape, resolve_inputs
from quantplug.loadtest.preflight import parse_url
from quantplug.loadtest.stats import compute_stats, exact_percentiles, pool_stats
from quantplug.loadtest.timings import TimingsWriter, read_timings


def _write(folder: Path, rows: list[tuple[float, float, int, str]], done: bool = True) -> Path:
    w = TimingsWriter(folder)
    w.write(rows)
    if done:
        w.finish(workers=0, workers_final=0)
    w.close()
    return folder


def test_timings_round_trip_and_exact_stats(tmp_path: Path) -> None:
    t0 = 1_000_000.0
    # 10 requests, 0.1 s apart, 1.25 .. 10.25 ms; one failure with a comma and newline in its message
    rows = [(t0 + i * 0.1, 1.25 + i, 1, "") for i in range(10)] + [(t0 + 0.55, 0.5, 0, "Boom: bad, very\nbad")]
    timings = read_timings(_write(tmp_path, rows))
    assert len(timings) == 11 and timings.done == {"records": 11, "failures": 1, "workers": 0, "workers_final": 0}
    assert timings.errors == {"Boom: bad, very\nbad": 1}
    stats = compute_stats(timings, "m", batch_size=4, users=2, workers=0)
    ok_ms = np.array([1.25 + i for i in range(10)])
    assert (stats.p50_ms, stats.p95_ms, stats.p99_ms) == pytest.approx(np.percentile(ok_ms, [50, 95, 99]))
    assert stats.p50_ms == pytest.approx(5.75)  # exact, not rounded to whole ms
    assert (stats.requests, stats.failures) == (11, 1)
    window = 0.9 + 10.25 / 1000  # first start to last end
    assert stats.window_s == pytest.approx(window, abs=1e-4)
    assert stats.throughput_rps == pytest.approx(10 / window, rel=1e-3)
    assert stats.throughput_ips == pytest.approx(40 / window, rel=1e-3)

    warm = compute_stats(timings, "m", batch_size=4, users=2, workers=0, warmup_s=0.5)
    assert warm.requests == 5 + 1 and warm.failures == 1  # starts at 0.5, 0.55, 0.6 .. 0.9
    assert warm.p50_ms == pytest.approx(np.percentile(ok_ms[5:], 50))


def test_incomplete_run_has_no_done_marker_and_cut_rows_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path, [(1.0, 2.0, 1, "")], done=False)
    with open(tmp_path / "timings.csv", "a") as f:
        f.write("2.0,3.")  # a row cut short by a killed process
    timings = read_timings(tmp_path)
    assert timings.done is None and len(timings) == 1


def test_pool_stats_uses_every_exact_time(tmp_path: Path) -> None:
    a = read_timings(_write(tmp_path / "a", [(0.0, 1.0, 1, ""), (0.5, 3.0, 1, "")]))
    b = read_timings(_write(tmp_path / "b", [(0.0, 5.0, 1, ""), (0.5, 7.0, 0, "x")]))
    sa = compute_stats(a, "m", batch_size=1, users=1, workers=0)
    sb = compute_stats(b, "m", batch_size=1, users=1, workers=0)
    pooled = pool_stats([(a, sa), (b, sb)])
    assert (pooled.requests, pooled.failures, pooled.runs) == (4, 1, 2)
    assert pooled.p50_ms == pytest.approx(3.0) and pooled.errors == {"x": 1}
    assert pooled.throughput_rps == pytest.approx(3 / (sa.window_s + sb.window_s), rel=1e-3)


def test_exact_percentiles_of_nothing_are_nan() -> None:
    assert all(np.isnan(v) for v in exact_percentiles(np.zeros(0)))


def test_gate_rules() -> None:
    def result(fb: int, fc: int, speedup: float | None, requests: int = 10) -> dict:
        return {"baseline": {"failures": fb, "requests": requests}, "candidate": {"failures": fc, "requests": requests},
                "speedup_throughput": speedup}

    assert check_gate(result(0, 0, 3.1), 3.0)[0] is True
    assert check_gate(result(0, 0, 2.9), 3.0) == (False, "throughput speed-up 2.9x is below 3.0x")
    assert check_gate(result(0, 1, 9.0), 3.0)[0] is False
    assert check_gate(result(1, 0, 9.0), None)[0] is False
    assert check_gate(result(0, 0, None), None)[0] is True
    assert check_gate(result(0, 0, 5.0, requests=0), None)[0] is False


def test_parse_input_shape() -> None:
    assert parse_input_shape(None) is None and parse_input_shape(" ") is None
    assert parse_input_shape("3x224x224") == (3, 224, 224)
    assert parse_input_shape("input_ids:128,attention_mask:128") == {"input_ids": (128,), "attention_mask": (128,)}
    for bad in ("3xAx4", "0x3", "ids:", ":128"):
        with pytest.raises(ConfigError):
            parse_input_shape(bad)


def test_resolve_inputs_from_metadata() -> None:
    meta = [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    (spec,) = resolve_inputs(meta, max_batch_size=16, batch_size=8)
    assert (spec.name, spec.shape, spec.datatype) == ("image", (8, 1, 28, 28), "FP32")
    with pytest.raises(ConfigError, match="exceeds model 'model''s max_batch_size 16"):
        resolve_inputs(meta, max_batch_size=16, batch_size=32)
    text = [{"name": "ids", "datatype": "INT64", "shape": [-1, -1]}, {"name": "mask", "datatype": "INT64",
                                                                        "shape": [-1, -1]}]
    with pytest.raises(ConfigError, match="dynamic dims"):
        resolve_inputs(text, max_batch_size=8, batch_size=2)
    specs = resolve_inputs(text, 8, 2, parse_input_shape("ids:16,mask:16"))
    assert [s.shape for s in specs] == [(2, 16), (2, 16)]
    with pytest.raises(ConfigError, match="does not have"):
        resolve_inputs(text, 8, 2, {"ids": (16,), "mask": (16,), "typo": (16,)})
    with pytest.raises(ConfigError, match="does not fit"):
        resolve_inputs(meta, 16, 1, (3, 28, 28))
    with pytest.raises(ConfigError, match="does not batch"):
        resolve_inputs([{"name": "x", "datatype": "FP32", "shape": [4]}], max_batch_size=0, batch_size=2)
    with pytest.raises(ConfigError, match="BYTES"):
        resolve_inputs([{"name": "s", "datatype": "BYTES", "shape": [-1, 1]}], 8, 1)


def test_make_arrays_random_and_real_rows() -> None:
    specs = resolve_inputs([{"name": "x", "datatype": "FP16", "shape": [-1, 3]},
                            {"name": "ids", "datatype": "INT64", "shape": [-1, 5]}], 8, 4)
    arrays = make_arrays(specs, np.random.default_rng(0))
    assert arrays["x"].dtype == np.float16 and arrays["x"].shape == (4, 3)
    assert arrays["ids"].dtype == np.int64 and set(np.unique(arrays["ids"])) <= {0, 1}
    real = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    tiled = make_arrays(specs, np.random.default_rng(0), real)
    assert tiled["x"].tolist() == [[0, 1, 2], [3, 4, 5], [0, 1, 2], [3, 4, 5]]
    with pytest.raises(ConfigError, match="rows of shape"):
        make_arrays(specs, np.random.default_rng(0), {"x": np.zeros((2, 4))})


@pytest.mark.parametrize(("url", "expected"), [("127.0.0.1:8001", ("127.0.0.1", 8001)),
                                               ("grpc://localhost:9000", ("localhost", 9000)),
                                               ("[::1]:8001", ("[::1]", 8001))])
def test_parse_url(url: str, expected: tuple[str, int]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["8001", "host:", "host:99999", "http://host", "a b:1"])
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_url(url)
