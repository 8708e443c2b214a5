"""``bench.md``: the machine, one row per model, and the targets marked met / not met with the measured value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..report import format_table

__all__ = ["format_markdown", "quality_text"]


def _x(v: Any) -> str | None:
    return None if v is None else f"{v:.2f}x"


def _num(v: Any, digits: int = 1) -> str | None:
    return None if v is None else f"{v:.{digits}f}"


def quality_text(scores: Mapping[str, float] | None, metric: str | None) -> str | None:
    if not scores:
        return None
    if metric == "cosine":
        parts = [f"cos {scores['cosine']:.4f}"]
        if "cosine_worst" in scores:
            parts.append(f"worst {scores['cosine_worst']:.3f}")
        if "top10_agreement" in scores:
            parts.append(f"top10 {scores['top10_agreement']:.3f}")
        return ", ".join(parts)
    if metric == "accuracy":
        text = f"top-1 agree {scores['accuracy']:.1f}%"
        if "top5_agreement" in scores:
            text += f" (top-5 {scores['top5_agreement']:.1f}%)"
        return text
    return ", ".join(f"{k} {v:.4g}" for k, v in scores.items())


def _machine(m: Mapping[str, Any]) -> str:
    flags = ", ".join(m.get("int8_flags") or []) or "none"
    load = m.get("loadavg_at_start")
    end = m.get("loadavg_at_end")
    mem = f", {m['memory_gib']} GiB" if "memory_gib" in m else ""
    return (f"{m.get('cpu_model', '?')}, {m.get('logical_cores', '?')} logical cores{mem}, INT8 flags: {flags}; "
            f"load average (1/5/15 min) at start {load}, at end {end}")


def _label(key: str, det: Mapping[str, Any]) -> str:
    label = str(det.get("label", key))
    return f"{label} [{det['calibrator']}]" if det.get("method") == "ptq" and det.get("calibrator") else label


def _rows(name: str, r: Mapping[str, Any], batch: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    inp = r.get("in_process", {})
    big, one = inp.get(f"batch_{batch}", {}), inp.get("batch_1", {})
    served = r.get("served", {})
    q = r.get("quality", {})
    for key, det in r.get("models", {}).items():
        if "error" in det:
            rows.append({"workload": name, "model": f"{det.get('label', key)}: FAILED: {det['error']}"})
            continue
        rows.append({
            "workload": name, "model": _label(key, det),
            "size": f"{det['size_ratio'] * 100:.0f}%" if det.get("size_ratio") else ("100%" if key == "fp32" else None),
            "ms": _num(big.get("medians_ms", {}).get(key)),
            "x_big": _x(big.get("speedup_vs_fp32", {}).get(key)) if key != "fp32" else "1.00x",
            "x_one": _x(one.get("speedup_vs_fp32", {}).get(key)) if key != "fp32" else "1.00x",
            "x_peer": _x(big.get("speedup_vs_peer", {}).get(key)) if key not in ("fp32", "peer") else "",
            "ips": _num(served.get("throughput_ips", {}).get(key)),
            "x_served": (_x(served.get("speedup_vs_fp32", {}).get(key)) if key != "fp32" else
                         ("1.00x" if served.get("throughput_ips") else None)),
            "eff": _num((r.get("efficiency") or {}).get(key), 2),
            "quality": quality_text(q.get("scores", {}).get(key), q.get("metric")),
        })
    return rows


def _runtimes_section(data: Mapping[str, Any], batch: int) -> list[str]:
    """Other in-process runtimes (backend plugins, e.g. OpenVINO), alternated with ONNX Runtime's rows."""
    rows: list[dict[str, Any]] = []
    for name, r in data["workloads"].items():
        for runtime, m in (r.get("runtimes") or {}).items():
            if "error" in m:
                rows.append({"workload": name, "model": f"{runtime}: FAILED: {m['error']}"})
                continue
            inp, q = m["in_process"], m["quality"]
            for key, det in m["models"].items():
                if "error" in det:
                    rows.append({"workload": name, "model": f"{det['label']}: FAILED: {det['error']}"})
                    continue
                secs = det.get("quantize_seconds")
                rows.append({
                    "workload": name, "model": det["label"], "ms": _num(inp["medians_ms"].get(key)),
                    "x_ort": _x(inp["speedup_vs_onnxruntime_fp32"].get(key)),
                    "x_fast": _x(inp["speedup_vs_fastest_fp32"].get(key)),
                    "x_peer": _x(inp["speedup_vs_peer"].get(key)) or "",
                    "quantize": f"{secs:.1f} s" if secs is not None else "",
                    "quality": quality_text(q["scores"].get(key), q.get("metric")),
                    "best": "fastest INT8" if key == inp.get("fastest_int8") else
                            ("fastest FP32" if key == inp.get("fastest_fp32") else ""),
                })
    if not rows:
        return []
    columns = [("workload", "workload", None), ("runtime and model", "model", None), (f"ms b{batch}", "ms", None),
               ("vs ORT FP32", "x_ort", None), ("vs fastest FP32", "x_fast", None), ("vs peer", "x_peer", None),
               ("time to quantize", "quantize", None), ("quality (own runtime, test set)", "quality", None),
               ("", "best", None)]
    return [f"## Other runtimes (in-process, batch {batch}, alternated with ONNX Runtime)", "",
            format_table(rows, columns), ""]


def _value(target: Mapping[str, Any], value: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.2f}x" if target["unit"] == "x" else f"{value:.1%}"


def format_markdown(data: Mapping[str, Any]) -> str:
    s = data["settings"]
    batch = s["batch"]
    lines = ["# quantplug bench", "",
             f"Machine: {_machine(data['machine'])}.",
             f"Run: {data.get('started_at')} to {data.get('finished_at')}; ONNX Runtime {s['threads']} intra-op "
             f"threads in-process and in Triton; request batch {batch}; served: {s['users']} locust users, "
             f"{s['pairs']} A/B pair(s) x {s['duration_s']} s per run{' (--quick)' if s.get('quick') else ''}. "
             "Speed-ups are medians of alternated ratios (in-process rounds, served A/B pairs); absolute times "
             "on a shared machine are noisy.", ""]
    rows: list[dict[str, Any]] = []
    for name, r in data["workloads"].items():
        if "error" in r:
            rows.append({"workload": name, "model": f"FAILED: {r['error']}"})
            continue
        rows.extend(_rows(name, r, batch))
    columns = [("workload", "workload", None), ("model", "model", None), ("size", "size", None),
               (f"ms b{batch}", "ms", None), (f"vs FP32 b{batch}", "x_big", None), ("vs FP32 b1", "x_one", None),
               (f"vs peer b{batch}", "x_peer", None), ("served inf/s", "ips", None),
               ("served vs FP32", "x_served", None), ("served / in-process", "eff", None),
               ("quality (ORT, test set)", "quality", None)]
    lines += [format_table(rows, columns), ""]
    lines += _runtimes_section(data, batch)
    lines += ["## Targets", ""]
    trows = [{"target": f"{t['workload']}: {t['target']}", "measured": _value(t, t["measured"]),
              "spread": f"{_value(t, t['spread'][0])} to {_value(t, t['spread'][1])}" if t.get("spread") else "",
              "result": "not measured" if t["met"] is None else
              ("met" if t["met"] else ("NOT MET (within noise)" if t.get("within_noise") else "NOT MET"))}
             for t in data["targets"]]
    lines += [format_table(trows, [("target", "target", None), ("measured (median)", "measured", None),
                                   ("spread (min to max)", "spread", None), ("result", "result", None)])]
    notes = data.get("notes") or []
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"
