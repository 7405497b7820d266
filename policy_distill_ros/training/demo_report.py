"""The demo's final report: one table with what users care about, from the stages' JSON files.

Reads, in the demo's output directory: `record.json`, `dagger_record.json` (policy-distill record),
`bc/metrics.json`, `student/metrics.json` (policy-distill train), `deploy_sim.json`,
`deploy_stream.json` (policy-distill deploy), `eval_final.json`, `eval_bc.json` (policy-distill
eval). Writes `report.md`, `returns.png` and `summary.json` next to them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from .report import write_json_atomic, write_text_atomic

REPORT_FILE = "report.md"
RETURNS_PNG = "returns.png"


def _read(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _num(value: Any, fmt: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def _size(n_bytes: Optional[int]) -> str:
    if not n_bytes:
        return "-"
    return f"{n_bytes / 1024:.1f} KiB" if n_bytes < 1024 ** 2 else f"{n_bytes / 1024 ** 2:.2f} MiB"


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not b:
        return None
    return a / b


def plot_returns(evals: Mapping[str, Mapping], path: Path) -> Optional[Path]:
    """Held-out return per episode seed, one marker series per policy."""
    series = {name: e for name, e in evals.items() if e.get("returns")}
    if not series:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for (name, e), marker in zip(series.items(), "o^sv"):
        x = range(len(e["returns"]))
        ax.plot(x, e["returns"], marker=marker, linestyle="none",
                label=f"{name}: mean {e['mean_return']:.0f}")
        ax.axhline(e["mean_return"], linewidth=0.8, alpha=0.5,
                   color=ax.lines[-1].get_color())
    ax.set_xlabel("held-out episode (seed 1000000 + k)")
    ax.set_ylabel("episode return")
    ax.set_title("Closed-loop return on held-out randomized episodes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summarize(out: Path, timings: Mapping[str, float]) -> Dict[str, Any]:
    final, bc_eval = _read(out / "eval_final.json"), _read(out / "eval_bc.json")
    teacher, student = final.get("teacher", {}), final.get("student", {})
    bc = bc_eval.get("student", {})
    stream, sim = _read(out / "deploy_stream.json"), _read(out / "deploy_sim.json")
    metrics = _read(out / "student" / "metrics.json")
    record, dagger = _read(out / "record.json"), _read(out / "dagger_record.json")
    return {
        "teacher": teacher, "student": student, "bc_student": bc,
        "return_ratio": final.get("return_ratio"),
        "bc_return_ratio": _ratio(bc.get("mean_return"), teacher.get("mean_return")),
        "param_ratio": final.get("param_ratio"),
        "teacher_onnx_bytes": metrics.get("teacher", {}).get("onnx_bytes"),
        "export": metrics.get("export", {}),
        "deploy_stream": stream.get("figures", {}), "deploy_sim": sim.get("figures", {}),
        "deploy_stream_rate_hz": stream.get("sensor_rate_hz"),
        "deploy_states": {"stream": stream.get("student_state"), "sim": sim.get("student_state"),
                          "stream_monitor": stream.get("monitor_message"),
                          "sim_monitor": sim.get("monitor_message")},
        "record_steps_per_s": record.get("steps_per_s"),
        "demonstration_episodes": len(record.get("episodes", [])),
        "dagger_episodes": len(dagger.get("episodes", [])),
        "samples": metrics.get("metrics", {}).get("train_samples"),
        "timings_s": dict(timings),
    }


def render(s: Mapping[str, Any]) -> str:
    t, st, bc = s["teacher"], s["student"], s["bc_student"]
    stream, sim = s["deploy_stream"], s["deploy_sim"]
    pct = lambda r: f"{100 * r:.1f} %" if r is not None else "-"  # noqa: E731
    lines = ["# policy-distill demo: teacher vs student", "",
             "| | teacher | student (BC only) | student (BC + KL + features, 1 DAgger round) |",
             "| --- | --- | --- | --- |",
             f"| mean return, held-out episodes | {_num(t.get('mean_return'))} "
             f"± {_num(t.get('std_return'))} | {_num(bc.get('mean_return'))} "
             f"± {_num(bc.get('std_return'))} | {_num(st.get('mean_return'))} "
             f"± {_num(st.get('std_return'))} |",
             f"| return, % of teacher | 100 % | {pct(s['bc_return_ratio'])} "
             f"| {pct(s['return_ratio'])} |",
             f"| forward distance per episode (m) | {_num(t.get('mean_forward_distance_m'), '.2f')} "
             f"| {_num(bc.get('mean_forward_distance_m'), '.2f')} "
             f"| {_num(st.get('mean_forward_distance_m'), '.2f')} |",
             f"| parameters | {_num(t.get('params'), ',d')} | {_num(bc.get('params'), ',d')} "
             f"| {_num(st.get('params'), ',d')} ({pct(s['param_ratio'])} of teacher) |",
             "| privileged inputs | yes | no | no |",
             f"| ONNX size | {_size(s['teacher_onnx_bytes'])} | {_size(bc.get('onnx_bytes'))} "
             f"| {_size(st.get('onnx_bytes'))} |",
             f"| inference latency p50 / p99 (us, 1 thread) | {_num(t.get('latency_p50_us'))} / "
             f"{_num(t.get('latency_p99_us'))} (torch) | {_num(bc.get('latency_p50_us'))} / "
             f"{_num(bc.get('latency_p99_us'))} | {_num(st.get('latency_p50_us'))} / "
             f"{_num(st.get('latency_p99_us'))} |",
             f"| loop latency p50 / p99 (ms), student node at "
             f"{_num(s['deploy_stream_rate_hz'], 'g')} Hz | | | "
             f"{_num(stream.get('latency_p50_ms'), '.3f')} / "
             f"{_num(stream.get('latency_p99_ms'), '.3f')} |",
             f"| deadline misses (stream / closed loop with sim) | | | "
             f"{_num(stream.get('deadline_misses'), '.0f')} / "
             f"{_num(sim.get('deadline_misses'), '.0f')} |",
             f"| fallback actions (stream / closed loop with sim) | | | "
             f"{_num(stream.get('student_fallbacks'), '.0f')} / "
             f"{_num(sim.get('student_fallbacks'), '.0f')} |",
             f"| student state at the end of deployment (stream / sim) | | | "
             f"{s['deploy_states']['stream'] or '-'} / {s['deploy_states']['sim'] or '-'} |",
             "", f"![returns]({RETURNS_PNG})", "",
             f"Parity of the exported student (torch vs ONNX Runtime, max abs error): "
             f"{_num(s['export'].get('max_abs_error'), '.2e')}.",
             f"Data: {s['demonstration_episodes']} teacher episodes recorded through the nodes "
             f"({_num(s['record_steps_per_s'], '.0f')} lockstep steps/s) + "
             f"{s['dagger_episodes']} student-driven episodes labelled by the teacher; "
             f"{_num(s['samples'], 'd')} training samples.",
             "Training details: [student/report.md](student/report.md) (losses, per-joint "
             "error); BC stage: [bc/report.md](bc/report.md).", "",
             "| stage | wall-clock (s) |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in s["timings_s"].items()]
    return "\n".join(lines) + "\n"


def write_demo_report(out: str | Path, timings: Mapping[str, float]) -> Path:
    out = Path(out)
    summary = summarize(out, timings)
    plot_returns({"teacher": summary["teacher"], "student (BC)": summary["bc_student"],
                  "student (DAgger)": summary["student"]}, out / RETURNS_PNG)
    write_json_atomic(out / "summary.json", summary)
    path = out / REPORT_FILE
    write_text_atomic(path, render(summary))
    return path
