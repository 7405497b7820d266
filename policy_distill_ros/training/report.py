"""The training run's human-readable outputs: report.md, losses.png, per_joint_action_error.png.

Everything is rendered from one JSON-able `summary` dict (what `metrics.json` holds), so a
later step (closed-loop evaluation) can add its figures and re-render the report with
`update_report(run_dir, evaluation)` without retraining.

`evaluation` (optional) is {"teacher": {...}, "student": {...}, ...}: per policy a dict with
at least `mean_return` (optionally `std_return`, `episodes`, `mean_forward_distance_m`, ...);
the report adds a closed-loop return row and the student's share of the teacher's return.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_report", "write_report", "update_report", "save_figure", "plot_losses",
           "plot_per_joint_error", "write_json_atomic", "REPORT_FILE", "METRICS_FILE",
           "LOSSES_PNG", "PER_JOINT_PNG"]

REPORT_FILE = "report.md"
METRICS_FILE = "metrics.json"
LOSSES_PNG = "losses.png"
PER_JOINT_PNG = "per_joint_action_error.png"


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(Path(path), json.dumps(data, indent=2, sort_keys=True, default=_jsonable)
                      + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.{digits}g}"
    return str(value)


def _size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "n/a"
    return f"{n_bytes / 1024:.1f} KiB" if n_bytes < 1 << 20 else f"{n_bytes / (1 << 20):.2f} MiB"


# ---------------------------------------------------------------------------------------------
# figures

def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure atomically (every plot of the package goes through here)."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_losses(history: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """Train (solid) and validation (dashed) loss of every term per epoch, log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    terms = sorted({t for h in history for t in h.get("train", {})},
                   key=lambda t: (t != "total", t))
    for i, term in enumerate(terms):
        color = f"C{i}"
        train = [h.get("train", {}).get(term, math.nan) for h in history]
        ax.plot(epochs, train, color=color, label=f"{term} (train)")
        val = [h.get("val", {}).get(term, math.nan) for h in history]
        if any(math.isfinite(v) for v in val):
            ax.plot(epochs, val, color=color, linestyle="--", label=f"{term} (val)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if all(v > 0 for h in history for v in h.get("train", {}).values()):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("distillation losses")
    return save_figure(fig, path)


def plot_per_joint_error(joints: Sequence[str], errors: Mapping[str, Mapping],
                         path: str | os.PathLike) -> Path:
    """Per-joint validation MAE of each named comparison (bars side by side)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    path = Path(path)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(joints) + 2), 4))
    names = [k for k, v in errors.items() if v.get("per_joint_mae")]
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(joints))
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, errors[name]["per_joint_mae"], width,
               label=name)
    ax.set_xticks(x, list(joints), rotation=30, ha="right")
    ax.set_ylabel("mean |error| (raw action)")
    ax.set_title("validation action error per joint")
    ax.grid(True, axis="y", alpha=0.3)
    if names:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# report

def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |"
            for row in rows]
    return out


def _comparison_rows(summary: Mapping, evaluation: Mapping | None) -> list[list[Any]]:
    m = summary.get("metrics", {})
    teacher, student = summary.get("teacher", {}), summary.get("student", {})
    t_params, s_params = m.get("teacher_params"), m.get("student_params")
    ratio = f"{100.0 * s_params / t_params:.2f} % of teacher" if t_params and s_params else ""
    vs_teacher = m.get("val_action_error_vs_teacher", {})
    vs_rec_s = m.get("val_action_error_vs_recorded", {})
    vs_rec_t = m.get("val_teacher_error_vs_recorded", {})
    rows: list[list[Any]] = [
        ["parameters", t_params, s_params, ratio],
        ["ONNX size", _size(teacher.get("onnx_bytes")), _size(student.get("onnx_bytes")), ""],
        ["privileged inputs", "yes" if teacher.get("privileged_topics") else "no",
         "yes" if student.get("privileged_topics") else "no",
         ", ".join(teacher.get("privileged_topics") or [])],
        ["observation size", teacher.get("obs_size"), student.get("obs_size"), ""],
        ["val action MSE vs teacher", 0.0, vs_teacher.get("mse"), "raw action units"],
        ["val action MAE vs teacher", 0.0, vs_teacher.get("mae"), ""],
        ["val action MAE vs recorded", vs_rec_t.get("mae"), vs_rec_s.get("mae"),
         "recorded = executed command"],
    ]
    if evaluation:
        t_eval, s_eval = evaluation.get("teacher") or {}, evaluation.get("student") or {}
        t_ret, s_ret = t_eval.get("mean_return"), s_eval.get("mean_return")
        share = f"{100.0 * s_ret / t_ret:.1f} % of teacher" if t_ret and s_ret is not None \
            and t_ret > 0 else ""
        rows.append(["closed-loop return (mean)", t_ret, s_ret, share])
        if t_eval.get("std_return") is not None or s_eval.get("std_return") is not None:
            rows.append(["closed-loop return (std)", t_eval.get("std_return"),
                         s_eval.get("std_return"), ""])
        if t_eval.get("episodes") is not None:
            rows.append(["eval episodes", t_eval.get("episodes"), s_eval.get("episodes"),
                         evaluation.get("note", "held-out randomized seeds")])
        for key in ("mean_forward_distance_m", "mean_length"):
            if key in t_eval or key in s_eval:
                rows.append([key.replace("_", " "), t_eval.get(key), s_eval.get(key), ""])
    return rows


def render_report(summary: Mapping, evaluation: Mapping | None = None) -> str:
    """Markdown report from a run summary (the metrics.json content)."""
    evaluation = evaluation if evaluation is not None else summary.get("evaluation")
    m = summary.get("metrics", {})
    name = summary.get("run_name", "distillation run")
    lines = [f"# {name}: teacher vs student", ""]
    if summary.get("created"):
        lines += [f"Created {summary['created']}.", ""]
    lines += ["## Teacher vs student", ""]
    lines += _table(["", "teacher", "student", "note"], _comparison_rows(summary, evaluation))
    if not evaluation:
        lines += ["", "Closed-loop return: not evaluated in this run (`policy-distill eval`)."]
    lines += ["", "## Data", ""]
    data = summary.get("data", {})
    lines += _table(["", "value"], [
        ["bags", ", ".join(f"`{b}`" for b in data.get("bags", [])) or "n/a"],
        ["samples (train / val)", f"{_fmt(m.get('train_samples'))} / {_fmt(m.get('val_samples'))}"],
        ["episodes (train / val)", f"{_fmt(m.get('train_episodes'))} / "
                                   f"{_fmt(m.get('val_episodes'))}"],
        ["min episode return", _fmt(data.get("min_episode_return"))],
        ["skipped echoes (unmatched / early / fallback)",
         " / ".join(str(sum(s.get(k, 0) for s in data.get("bag_stats", [])))
                    for k in ("unmatched_echoes", "early_echoes", "fallback_echoes"))],
    ])
    lines += ["", "## Training", ""]
    train = summary.get("config", {}).get("train", {})
    loss = train.get("loss", {})
    terms = [f"bc ({loss.get('bc_kind')}) x {loss.get('bc_weight')}"] if loss.get("bc_weight") \
        else []
    if loss.get("kl_weight"):
        terms.append(f"KL (T = {loss.get('temperature')}) x {loss.get('kl_weight')}")
    if loss.get("feature_weight"):
        pairs = ", ".join(f"{t}<-{s}" for t, s in loss.get("feature_pairs", []))
        terms.append(
            f"features {loss.get('feature_kind')} [{pairs}] x {loss.get('feature_weight')}"
        )
    student_cfg = train.get("student", {})
    lines += _table(["", "value"], [
        ["student", f"{student_cfg.get('kind')} hidden {student_cfg.get('hidden_sizes')} "
                    f"{student_cfg.get('activation')}"],
        ["losses", " + ".join(terms) or "n/a"],
        ["epochs run (best)", f"{_fmt(m.get('epochs_run'))} ({_fmt(m.get('best_epoch'))})"],
        ["batch / lr / weight decay", f"{_fmt(train.get('batch_size'))} / {_fmt(train.get('lr'))} "
                                      f"/ {_fmt(train.get('weight_decay'))}"],
        ["best val loss", _fmt(m.get("best_val_loss"))],
        ["training throughput", f"{_fmt(m.get('samples_per_s'), 3)} samples/s per process, "
                                f"{_fmt(m.get('epoch_time_s'), 3)} s/epoch, "
                                f"{_fmt(m.get('world_size'))} process(es) on {m.get('device')}"],
        ["teacher pass", f"{_fmt(m.get('teacher_pass_s'), 3)} s (no_grad, once)"],
    ])
    history = summary.get("history", [])
    if history:
        lines += ["", f"![losses]({LOSSES_PNG})", "", f"![per joint]({PER_JOINT_PNG})", ""]
        step = max(1, len(history) // 10)
        shown = [h for i, h in enumerate(history) if i % step == 0 or i == len(history) - 1]
        t_terms = sorted({t for h in history for t in h.get("train", {})},
                         key=lambda t: (t != "total", t))
        lines += _table(["epoch"] + [f"train {t}" for t in t_terms] + [f"val {t}" for t in t_terms],
                        [[h["epoch"]] + [h.get("train", {}).get(t) for t in t_terms]
                         + [h.get("val", {}).get(t) for t in t_terms] for h in shown])
    joints = summary.get("student", {}).get("joints") or []
    per_joint = m.get("val_action_error_vs_teacher", {}).get("per_joint_mae") or []
    if joints and per_joint:
        lines += ["", "Per-joint validation MAE vs teacher:", ""]
        lines += _table(["joint", "MAE", "RMSE"],
                        [[j, per_joint[i], (m["val_action_error_vs_teacher"].get("per_joint_rmse")
                                            or [None] * len(joints))[i]]
                         for i, j in enumerate(joints)])
    export = summary.get("export", {})
    if export:
        lines += ["", "## Export", ""]
        lines += _table(["", "value"], [
            ["file", f"`{export.get('path')}`"],
            ["parity (torch vs ONNX Runtime, max abs)", f"{_fmt(export.get('max_abs_error'))} "
                                                        f"<= {_fmt(export.get('atol'))}"],
            ["exporter / opset", f"{export.get('exporter')} / {export.get('opset')}"],
            ["teacher sha256", f"`{summary.get('teacher', {}).get('sha256', 'n/a')}`"],
        ])
    if evaluation:
        lines += ["", "## Closed-loop evaluation", "", "```json",
                  json.dumps(evaluation, indent=2, sort_keys=True, default=_jsonable), "```"]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | os.PathLike, summary: Mapping,
                 evaluation: Mapping | None = None) -> dict[str, Path]:
    """metrics.json, report.md and both figures into `run_dir`; returns their paths."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = dict(summary)
    if evaluation is not None:
        summary["evaluation"] = dict(evaluation)
    paths = {"metrics": run_dir / METRICS_FILE, "report": run_dir / REPORT_FILE,
             "losses": run_dir / LOSSES_PNG, "per_joint": run_dir / PER_JOINT_PNG}
    write_json_atomic(paths["metrics"], summary)
    plot_losses(summary.get("history", []), paths["losses"])
    m = summary.get("metrics", {})
    plot_per_joint_error(summary.get("student", {}).get("joints") or [],
                         {"student vs teacher": m.get("val_action_error_vs_teacher", {}),
                          "student vs recorded": m.get("val_action_error_vs_recorded", {}),
                          "teacher vs recorded": m.get("val_teacher_error_vs_recorded", {})},
                         paths["per_joint"])
    write_text_atomic(paths["report"], render_report(summary))
    return paths


def update_report(run_dir: str | os.PathLike, evaluation: Mapping) -> dict[str, Path]:
    """Add closed-loop evaluation results to an existing run and re-render its report."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{run_dir / METRICS_FILE}: cannot read the run summary ({exc})") from None
    return write_report(run_dir, summary, evaluation)
