"""The student-size trade-off: a ladder of students distilled from the same data, each measured
for held-out return, parameters, ONNX Runtime latency and memory, with the Pareto front.

Every rung trains with the same `TrainConfig` (epochs, batch, learning rate, losses, seed) on
the same dataset, only the architecture changes; a `progressive` rung is distilled through a
medium student first (`progressive.run_progressive`), the way the smallest sizes may gain from
it. Each student is exported (parity-checked) and then measured like the robot runs it:
`OnnxPolicy` (one intra-op thread) in closed loop on held-out seeds, latency interleaved across
all rungs on the same observations (ratios survive a shared machine's load), memory as the
resident set of a fresh process that loads the file and runs it (`inference_memory`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Rung", "DEFAULT_LADDER", "parse_ladder", "train_rung",
           "pareto_front", "rows_with_front", "plot_pareto", "SWEEP_COLUMNS"]


@dataclass(frozen=True)
class Rung:
    """One student of the ladder: a StudentConfig dict; `medium` (a StudentConfig dict) makes
    it a progressive rung distilled teacher -> medium -> this student."""

    name: str
    student: dict
    medium: dict | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "student": self.student, "medium": self.medium}


def _mlp(h: Sequence[int]) -> dict:
    return {"kind": "history_mlp", "hidden_sizes": list(h)}


# ~1k to ~100k parameters on the demo robot's 102 inputs and 8 actions.
DEFAULT_LADDER = (
    Rung("mlp-8x8", _mlp([8, 8])),
    Rung("mlp-8x8 progressive", _mlp([8, 8]), medium=_mlp([128, 128])),
    Rung("mlp-16x16", _mlp([16, 16])),
    Rung("mlp-48x48", _mlp([48, 48])),
    Rung("mlp-128x128", _mlp([128, 128])),
    Rung("mlp-256x256", _mlp([256, 256])),
    Rung("tcn-16x16/48", {"kind": "tcn", "conv_channels": [16, 16], "hidden_sizes": [48]}),
    Rung("gru-32/48", {"kind": "gru", "gru_hidden_size": 32, "hidden_sizes": [48]}),
)


def parse_ladder(names: str | None) -> list[Rung]:
    """The default ladder, or the rungs named (comma-separated), or `kind:h1xh2` specs such as
    `history_mlp:64x64`, `tcn:16x16/48`, `gru:32/48`, `progressive:8x8/128x128`."""
    if not names or names == "default":
        return list(DEFAULT_LADDER)
    known = {r.name: r for r in DEFAULT_LADDER}
    out = []
    for item in (s.strip() for s in names.split(",")):
        if not item:
            continue
        if item in known:
            out.append(known[item])
            continue
        kind, _, sizes = item.partition(":")
        try:
            parts = [[int(v) for v in p.split("x")] for p in sizes.split("/")] if sizes else []
        except ValueError:
            parts = None
        if not parts:
            raise ValueError(f"ladder entry {item!r}: not a default rung ({list(known)}) nor "
                             f"kind:SIZES (history_mlp:64x64, tcn:16x16/48, gru:32/48, "
                             f"progressive:8x8/128x128)")
        if kind in ("history_mlp", "mlp"):
            out.append(Rung(item, {"kind": kind, "hidden_sizes": parts[0]}))
        elif kind == "tcn":
            out.append(Rung(item, {"kind": "tcn", "conv_channels": parts[0],
                                   "hidden_sizes": parts[1] if len(parts) > 1 else [48]}))
        elif kind == "gru":
            out.append(Rung(item, {"kind": "gru", "gru_hidden_size": parts[0][0],
                                   "hidden_sizes": parts[1] if len(parts) > 1 else [48]}))
        elif kind == "progressive" and len(parts) == 2:
            out.append(Rung(item, _mlp(parts[0]), medium=_mlp(parts[1])))
        else:
            raise ValueError(f"ladder entry {item!r}: unknown kind {kind!r} (history_mlp, "
                             f"mlp, tcn, gru, progressive:SMALL/MEDIUM)")
    if len({r.name for r in out}) != len(out):
        raise ValueError("ladder entries must be distinct")
    return out


def train_rung(rung: Rung, teacher, teacher_normalizer, dataset, student_spec, sim_config,
               train: dict, progress: bool = False):
    """(TrainResult, training seconds) of one rung; `train` is a TrainConfig dict without
    `student`."""
    from .trainer import TrainConfig, fit
    config = TrainConfig.from_dict(dict(train, student=dict(rung.student)),
                                   student_spec=student_spec)
    started = time.perf_counter()
    if rung.medium is None:
        result = fit(teacher, teacher_normalizer, dataset, config, progress=progress)
    else:
        from .progressive import ProgressiveConfig, run_progressive
        chain = ProgressiveConfig(stages=[dict(rung.medium), dict(rung.student)])
        result = run_progressive(teacher, teacher_normalizer, dataset, student_spec,
                                 sim_config, chain, config, progress=progress).final
    return result, time.perf_counter() - started


def pareto_front(rows: Sequence[dict], cost: str, gain: str = "return_pct") -> list[int]:
    """Indices of the rows no other row beats (cost <= and gain >=, one strictly)."""
    front = []
    for i, r in enumerate(rows):
        if r.get(cost) is None or r.get(gain) is None:
            continue
        dominated = any(o is not r and o.get(cost) is not None and o.get(gain) is not None
                        and o[cost] <= r[cost] and o[gain] >= r[gain]
                        and (o[cost] < r[cost] or o[gain] > r[gain]) for o in rows)
        if not dominated:
            front.append(i)
    return front


SWEEP_COLUMNS = (("name", "student", ""), ("params", "params", ",d"),
                 ("mean_return", "return", ".0f"), ("ci95", "+-", ".0f"),
                 ("return_pct", "% teacher", ".0f"), ("falls", "falls", "d"),
                 ("onnx_bytes", "onnx B", ",d"), ("p50_us", "p50 us", ".1f"),
                 ("p99_us", "p99 us", ".1f"), ("rss_mib", "RSS MiB", ".1f"),
                 ("session_mib", "session MiB", ".2f"), ("train_s", "train s", ".0f"),
                 ("pareto", "Pareto", ""))


def plot_pareto(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Three panels: % of the teacher's return against parameters, p99 latency and memory;
    the Pareto front of each joined by a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import save_figure

    axes_spec = (("params", "parameters", True),
                 ("p99_us", "ONNX Runtime p99 latency (us, 1 thread)", False),
                 ("session_mib", "session memory (MiB, RSS added by the model)", False))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True)
    kinds = sorted({r["kind"] for r in rows})
    colors = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for ax, (key, label, logx) in zip(axes, axes_spec, strict=True):
        for r in rows:
            marker = "D" if r.get("progressive") else "o"
            ax.errorbar(r[key], r["return_pct"], yerr=r.get("ci95_pct") or 0, fmt=marker,
                        color=colors[r["kind"]], capsize=2, ms=6)
            ax.annotate(r["name"], (r[key], r["return_pct"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        front = sorted((rows[i] for i in pareto_front(rows, key)), key=lambda r: r[key])
        ax.plot([r[key] for r in front], [r["return_pct"] for r in front], "k--", lw=1,
                label="Pareto front")
        ax.axhline(100, color="grey", lw=0.8)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out return, % of the teacher (95 % interval)")
    for kind in kinds:
        axes[0].plot([], [], "o", color=colors[kind], label=kind)
    axes[0].plot([], [], "D", color="grey", label="progressive")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title or "student size trade-off", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def rows_with_front(rows: list[dict], keys: Sequence[str] = ("params", "p99_us", "session_mib")
                    ) -> list[dict]:
    """Mark each row with the fronts it is on ('P' params, 'L' latency, 'M' memory)."""
    marks: dict[int, str] = {}
    for key, letter in zip(keys, "PLM", strict=False):
        for i in pareto_front(rows, key):
            marks[i] = marks.get(i, "") + letter
    for i, r in enumerate(rows):
        r["pareto"] = marks.get(i, "")
    return rows

