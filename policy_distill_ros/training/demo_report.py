"""The demo's final report: one table with what users care about, from the stages' JSON files.

Reads, in the demo's output directory: `record.json` (policy-distill record), `bc/metrics.json`
(policy-distill train), `dagger/dagger.json` (policy-distill dagger: per-round figures),
`deploy_sim.json`, `deploy_stream.json` (policy-distill deploy), `eval_final.json`,
`eval_bc.json` (policy-distill eval). Writes `report.md`, `returns.png`, `dagger_rounds.png` and
`summary.json` next to them.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .report import write_json_atomic, write_text_atomic

REPORT_FILE = "report.md"
RETURNS_PNG = "returns.png"
ROUNDS_PNG = "dagger_rounds.png"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _num(value: Any, fmt: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def _size(n_bytes: int | None) -> str:
    if not n_bytes:
        return "-"
    return f"{n_bytes / 1024:.1f} KiB" if n_bytes < 1024 ** 2 else f"{n_bytes / 1024 ** 2:.2f} MiB"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def plot_returns(evals: Mapping[str, Mapping], path: Path) -> Path | None:
    """Held-out return per episode seed, one marker series per policy."""
    series = {name: e for name, e in evals.items() if e.get("returns")}
    if not series:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for (name, e), marker in zip(series.items(), "o^sv", strict=False):
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


def plot_rounds(rounds, teacher_return: float | None, path: Path) -> Path | None:
    """The DAgger curve: each round's student on the validation seeds, and the return of the
    round's own (mixed) rollouts, against the teacher's held-out return."""
    points = [(r["round"], r.get("val_mean_return"), r.get("rollout_mean_return"), r.get("via"))
              for r in rounds]
    if not any(p[1] is not None for p in points):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [p[0] for p in points if p[1] is not None]
    ax.plot(x, [p[1] for p in points if p[1] is not None], marker="o",
            label="student alone, validation seeds 900000+k")
    mixed = [(p[0], p[2]) for p in points if p[2] is not None and p[0] > 0]
    if mixed:
        ax.plot(*zip(*mixed, strict=True), marker="^", linestyle="--", alpha=0.7,
                label="the round's rollouts (student + beta x teacher)")
    for rnd, _, _, via in points:
        if via == "ros":
            ax.axvspan(rnd - 0.4, rnd + 0.4, color="tab:green", alpha=0.15,
                       label="round through the ROS nodes")
    if teacher_return:
        ax.axhline(teacher_return, color="black", linewidth=0.8, label="teacher (held-out)")
        ax.axhline(0.95 * teacher_return, color="black", linestyle=":", linewidth=0.8,
                   label="95 % of the teacher")
    ax.set_xticks([p[0] for p in points])
    ax.set_xlabel("DAgger round (0 = behavioural cloning on the recorded demonstrations)")
    ax.set_ylabel("mean episode return")
    ax.set_title("DAgger rounds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summarize(out: Path, timings: Mapping[str, float]) -> dict[str, Any]:
    final, bc_eval = _read(out / "eval_final.json"), _read(out / "eval_bc.json")
    teacher, student = final.get("teacher", {}), final.get("student", {})
    bc = bc_eval.get("student", {})
    stream, sim = _read(out / "deploy_stream.json"), _read(out / "deploy_sim.json")
    metrics = _read(out / "bc" / "metrics.json")
    record, dagger = _read(out / "record.json"), _read(out / "dagger" / "dagger.json")
    rounds = dagger.get("rounds", [])
    return {
        "teacher": teacher, "student": student, "bc_student": bc,
        "return_ratio": final.get("return_ratio"),
        "bc_return_ratio": _ratio(bc.get("mean_return"), teacher.get("mean_return")),
        "param_ratio": final.get("param_ratio"),
        "forward_ratio": _ratio(student.get("mean_forward_distance_m"),
                                teacher.get("mean_forward_distance_m")),
        "teacher_onnx_bytes": metrics.get("teacher", {}).get("onnx_bytes"),
        "export": {"max_abs_error": dagger.get("parity_max_abs_error")},
        "dagger_rounds": rounds, "selected_round": dagger.get("selected_round"),
        "deploy_stream": stream.get("figures", {}), "deploy_sim": sim.get("figures", {}),
        "deploy_stream_rate_hz": stream.get("sensor_rate_hz"),
        "deploy_states": {"stream": stream.get("student_state"), "sim": sim.get("student_state"),
                          "stream_monitor": stream.get("monitor_message"),
                          "sim_monitor": sim.get("monitor_message")},
        "record_steps_per_s": record.get("steps_per_s"),
        "demonstration_episodes": len(record.get("episodes", [])),
        "dagger_episodes": sum(r.get("episodes", 0) for r in rounds if r.get("round", 0) > 0),
        "ros_dagger_episodes": sum(r.get("episodes", 0) for r in rounds
                                   if r.get("via") == "ros"),
        "samples": dagger.get("dataset_samples"),
        "bc_samples": metrics.get("metrics", {}).get("train_samples"),
        "train_samples_per_s": metrics.get("metrics", {}).get("samples_per_s"),
        "timings_s": dict(timings),
    }


def render(s: Mapping[str, Any]) -> str:
    t, st, bc = s["teacher"], s["student"], s["bc_student"]
    stream, sim = s["deploy_stream"], s["deploy_sim"]

    def pct(r: float | None) -> str:
        return f"{100 * r:.1f} %" if r is not None else "-"

    ros = s["ros_dagger_episodes"]
    lines = [
        "# policy-distill demo: teacher vs student",
        "",
        f"**Final student: {pct(s['return_ratio'])} of the teacher's return, "
        f"{pct(s.get('forward_ratio'))} of its forward distance, "
        f"{pct(s['param_ratio'])} of its parameters, no privileged input** "
        f"({st.get('episodes', '-')} held-out episodes; "
        f"DAgger round {s.get('selected_round')}, chosen on validation seeds).",
        "",
        "| | teacher | student (BC only) | final student (DAgger) |",
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
        "",
        f"![returns]({RETURNS_PNG})",
        "",
        f"Parity of the exported student (torch vs ONNX Runtime, max abs error): "
        f"{_num(s['export'].get('max_abs_error'), '.2e')}.",
        f"Data: {s['demonstration_episodes']} teacher episodes recorded through the nodes "
        f"({_num(s['record_steps_per_s'], '.0f')} lockstep steps/s) + "
        f"{s['dagger_episodes']} student-driven episodes labelled by the teacher "
        f"({ros} of them through the ROS nodes); {_num(s['samples'], 'd')} samples "
        f"aggregated. Training throughput (BC stage): "
        f"{_num(s.get('train_samples_per_s'), ',.0f')} samples/s.",
        "BC stage details: [bc/report.md](bc/report.md) (losses, per-joint error).",
        "",
        "## DAgger rounds",
        "",
        f"![DAgger rounds]({ROUNDS_PNG})",
        "",
        "| round | beta | via | new samples | total | rollout return | validation return "
        "| on-policy mse before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in s.get("dagger_rounds", []):
        mark = " (selected)" if r.get("round") == s.get("selected_round") else ""
        lines.append(
            f"| {r.get('round')}{mark} | {_num(r.get('beta'), '.3f')} | "
            f"{r.get('via', '-') if r.get('round') else 'teacher bag'} | "
            f"{_num(r.get('new_samples'), ',d')} | {_num(r.get('dataset_samples'), ',d')} | "
            f"{_num(r.get('rollout_mean_return'))} | {_num(r.get('val_mean_return'))} | "
            f"{_num(r.get('on_policy_error_before'), '.4f')} / "
            f"{_num(r.get('on_policy_error_after'), '.4f')} |"
        )
    total = s["timings_s"].get("total")
    lines += ["", f"Wall-clock: {_num(total / 60 if total else None, '.1f')} min in total.", "",
              "| stage | wall-clock (s) |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in s["timings_s"].items()]
    return "\n".join(lines) + "\n"


def write_demo_report(out: str | Path, timings: Mapping[str, float]) -> Path:
    out = Path(out)
    summary = summarize(out, timings)
    plot_returns({"teacher": summary["teacher"], "student (BC)": summary["bc_student"],
                  "student (DAgger)": summary["student"]}, out / RETURNS_PNG)
    plot_rounds(summary["dagger_rounds"], summary["teacher"].get("mean_return"),
                out / ROUNDS_PNG)
    write_json_atomic(out / "summary.json", summary)
    path = out / REPORT_FILE
    write_text_atomic(path, render(summary))
    return path
