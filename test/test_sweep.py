"""The size sweep at a tiny size: every rung (MLP, progressive, TCN, GRU) trained on the same
data, exported, evaluated, timed and measured; Pareto fronts that a dominated rung is not on."""
from __future__ import annotations

import json

import pytest

from distill_fixtures import save_random_teacher
from policy_distill_ros.cli import main as cli_main
from policy_distill_ros.training.sweep import DEFAULT_LADDER, pareto_front, parse_ladder


def test_pareto_front_keeps_only_undominated_rows():
    rows = [{"params": 1000, "return_pct": 50.0}, {"params": 2000, "return_pct": 40.0},
            {"params": 4000, "return_pct": 90.0}, {"params": 4000, "return_pct": 80.0},
            {"params": 500, "return_pct": None}]
    assert pareto_front(rows, "params") == [0, 2]


def test_ladder_names_and_specs():
    assert [r.name for r in parse_ladder("default")] == [r.name for r in DEFAULT_LADDER]
    rungs = parse_ladder("mlp-48x48,history_mlp:64x32,tcn:8x8/16,gru:16/32,progressive:8x8/64x64")
    assert rungs[1].student == {"kind": "history_mlp", "hidden_sizes": [64, 32]}
    assert rungs[2].student == {"kind": "tcn", "conv_channels": [8, 8], "hidden_sizes": [16]}
    assert rungs[3].student["gru_hidden_size"] == 16
    assert rungs[4].medium == {"kind": "history_mlp", "hidden_sizes": [64, 64]}
    with pytest.raises(ValueError, match="unknown kind 'cnn'"):
        parse_ladder("cnn:3x3")


@pytest.mark.timeout(300)
def test_sweep_command_at_tiny_size(tmp_path, capsys):
    teacher = save_random_teacher(tmp_path / "teacher")
    out = tmp_path / "sweep"
    code = cli_main(["sweep", "--teacher", teacher, "--ladder",
                     "history_mlp:8x8,progressive:8x8/32x32,tcn:8x8/16,gru:8/16",
                     "--demo-episodes", "3", "--max-episode-steps", "30", "--eval-episodes", "2",
                     "--epochs", "2", "--memory-repeats", "1", "--latency-rows", "50",
                     "--latency-repeats", "1",
                     "--out", str(out), "--no-progress"])
    assert code == 0
    report = json.loads((out / "sweep.json").read_text())
    rows = report["rows"]
    assert [r["name"] for r in rows] == ["history_mlp:8x8", "progressive:8x8/32x32",
                                         "tcn:8x8/16", "gru:8/16"]
    assert rows[0]["params"] == rows[1]["params"] and rows[1]["progressive"]
    for r in rows:
        assert (out / "students" / r["file"]).is_file()
        assert len(r["returns"]) == 2 and r["p99_us"] >= r["p50_us"] > 0
        assert r["rss_mib"] > r["session_mib"] > 0 and r["onnx_bytes"] > 0
    assert any(r["pareto"] for r in rows)
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "Pareto" in (out / "sweep.md").read_text()
    assert "gru:8/16" in capsys.readouterr().out
    # re-timing the same students elsewhere needs only the sweep directory
    assert cli_main(["sweep", "--measure-only", str(out), "--latency-repeats", "1",
                     "--memory-repeats", "1", "--no-progress"]) == 0
    again = json.loads((out / "sweep.json").read_text())
    assert [r["returns"] for r in again["rows"]] == [r["returns"] for r in rows]
    assert "--measure-only" in again["command"] and again["rows"][0]["calls"] == 50
    assert cli_main(["sweep", "--measure-only", str(tmp_path / "nothing")]) == 1
