"""scripts/train_teacher.py as users run it (a subprocess, real SB3 PPO on the embedded
simulator, tiny size): checkpoints, a resumed stage with another reward, held-out evaluation
and checkpoint selection on validation seeds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts/train_teacher.py"


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def policy_weights(directory: Path) -> dict:
    from stable_baselines3 import PPO
    return PPO.load(directory / "ant_teacher_sb3.zip", device="cpu").policy.state_dict()


def test_train_resume_evaluate_and_select(tmp_path):
    first, second, again = tmp_path / "stage1", tmp_path / "stage2", tmp_path / "stage2_again"
    # 2 envs x 256 steps per rollout: checkpoints at 512 and 1,024 steps.
    run("--timesteps", "1024", "--n-envs", "2", "--checkpoint-steps", "512", "--keep-checkpoints",
        "--eval-episodes", "0", "--out", str(first))
    assert sorted(d.name for d in (first / "checkpoints").iterdir()) == ["1024", "512"]
    assert not (first / "ant_teacher_eval.json").exists()   # --eval-episodes 0: no evaluation

    out = run("--resume", str(first), "--sim-set", "fall_cost=200", "--timesteps", "1536",
              "--n-envs", "2", "--checkpoint-steps", "512", "--eval-episodes", "2",
              "--out", str(second))
    assert f"resumed from {first} at 1024 steps" in out
    curve = (second / "ant_teacher_curve.csv").read_text().splitlines()
    assert curve[0] == "timesteps,mean_return,mean_episode_length"
    assert int(curve[-1].split(",")[0]) == 1536
    report = json.loads((second / "ant_teacher_eval.json").read_text())
    assert report["timesteps"] == 1536
    for name in ("teacher", "random"):
        r = report[name]
        assert r["seeds"] == [1_000_000, 1_000_001]        # held-out seeds
        assert 0 <= r["terminated_episodes"] <= 2
        assert len(r["returns"]) == 2
    assert (second / "ant_teacher_curve.png").stat().st_size > 0

    # A stage is reproducible from its seed: the same resumed stage again, the same weights.
    run("--resume", str(first), "--sim-set", "fall_cost=200", "--timesteps", "1536",
        "--n-envs", "2", "--checkpoint-steps", "512", "--eval-episodes", "0", "--out", str(again))
    a, b = policy_weights(second), policy_weights(again)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not torch.equal(a["action_net.weight"], policy_weights(first)["action_net.weight"])

    out = run("--out", str(first), "--validate-checkpoints", "2")
    ranked = json.loads((first / "checkpoint_validation.json").read_text())
    assert sorted(r["steps"] for r in ranked) == [512, 1024]
    keys = [(-r["fall_free"], -r["mean_forward_distance_m"]) for r in ranked]
    assert keys == sorted(keys)
    assert f"best: {ranked[0]['checkpoint']}" in out


def test_unknown_sim_override_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sim-set", "no_such_term=1",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "no_such_term" in proc.stderr and "fall_cost" in proc.stderr


def test_validating_a_run_without_checkpoints_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--validate-checkpoints", "2",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert f"no checkpoints in {tmp_path / 'checkpoints'}" in proc.stderr
