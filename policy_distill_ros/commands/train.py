"""`policy-distill train`: distill a student from recorded bags (no ROS needed).

    policy-distill train --config config/train.yaml [--bags BAG ...] [--out runs/NAME]
                         [--checkpoint-every N] [--resume PATH] [--nproc-per-node 2] [--announce]

Writes runs/<name>/{student.onnx, report.md, metrics.json, losses.png,
per_joint_action_error.png, config.yaml} (see training/pipeline.py) with a tqdm progress bar.
`--nproc-per-node N` runs the same training data-parallel under torchrun (N processes, gloo on
CPU, nccl on CUDA); one process never imports the DDP module. `--checkpoint-every N` writes
runs/<name>/checkpoints/epoch_NNNN.pt every N epochs; `--resume PATH` (a checkpoint, or the
checkpoints directory: its newest) continues the same run bit-for-bit on the same process count,
and refuses, naming the field, a checkpoint of another config, teacher or dataset. `--announce`
publishes the exported path on `model_updated` (latched), so a student node with
`reload_on_announce` swaps the new model in.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HELP = "distill a student from bags (policy-distill train --config config/train.yaml)"
LOG = logging.getLogger("policy-distill.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from policy_distill_ros.training.pipeline import add_run_arguments
    add_run_arguments(parser)
    parser.add_argument("--nproc-per-node", type=int, default=1,
                        help="data-parallel processes under torchrun (default 1: no DDP)")
    parser.add_argument("--announce", action="store_true",
                        help="publish the exported path on model_updated (std_msgs/String, "
                             "transient local)")
    parser.add_argument("--announce-linger-s", type=float, default=3.0,
                        help="keep the latched announcement up this long for late subscribers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _torchrun(args: argparse.Namespace) -> tuple[int, Path | None]:
    """Re-run this training under torchrun; returns (exit code, exported path or None)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        LOG.error("torchrun not found next to %s (it comes with the torch wheel)", sys.executable)
        return 2, None
    forwarded = ["--config", args.config]
    for flag in ("bags",):
        if getattr(args, flag):
            forwarded += [f"--{flag}", *getattr(args, flag)]
    for flag in ("out", "teacher", "epochs", "dataset", "save_dataset", "checkpoint_every",
                 "resume"):
        value = getattr(args, flag)
        if value is not None:
            forwarded += [f"--{flag.replace('_', '-')}", str(value)]
    command = [str(torchrun), "--standalone", f"--nproc-per-node={args.nproc_per_node}", "-m",
               "policy_distill_ros.training.ddp", *forwarded]
    LOG.info("data-parallel: %s", " ".join(command))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)   # the torchrun group we started, by its pid
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    if code != 0:
        return code, None
    from policy_distill_ros.training.pipeline import STUDENT_FILE, load_run_config
    config = load_run_config(args.config, overrides={"bags": args.bags, "out": args.out,
                                                     "teacher": args.teacher})
    return 0, config.out_dir / STUDENT_FILE


def announce(path: str, linger_s: float = 3.0) -> None:
    """Publish `path` on model_updated with the latched QoS and keep it up for `linger_s`."""
    import rclpy
    from std_msgs.msg import String

    from policy_distill_ros.nodes.ros_common import LATCHED_QOS
    rclpy.init()
    try:
        node = rclpy.create_node("policy_distill_train_announce")
        publisher = node.create_publisher(String, "model_updated", LATCHED_QOS)
        publisher.publish(String(data=str(path)))
        deadline = time.monotonic() + linger_s
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    LOG.info("announced %s on model_updated", path)


def run(args: argparse.Namespace) -> int:
    from policy_distill_ros.training.dataset import DatasetError
    from policy_distill_ros.training.export import ExportParityError
    from policy_distill_ros.training.trainer import TrainingError
    if args.nproc_per_node < 1:
        LOG.error("--nproc-per-node must be >= 1")
        return 2
    if args.nproc_per_node > 1:
        code, onnx_path = _torchrun(args)
    else:
        from policy_distill_ros.training.pipeline import run_from_args
        try:
            outputs = run_from_args(args, progress=not args.no_progress)
        except (DatasetError, TrainingError, ExportParityError, ValueError) as exc:
            LOG.error("%s", exc)
            return 1
        onnx_path = outputs.onnx_path
        m = outputs.result.metrics
        err = m.get("val_action_error_vs_teacher", {})
        LOG.info("student %s: %d params (%.2f%% of teacher), val action MSE vs teacher %.4g, "
                 "%.0f samples/s, %.2f s/epoch", onnx_path, m["student_params"],
                 100.0 * m["student_params"] / m["teacher_params"], err.get("mse", float("nan")),
                 m["samples_per_s"] or 0.0, m["epoch_time_s"])
        LOG.info("report: %s", outputs.report_path)
        code = 0
    if code == 0 and args.announce and onnx_path is not None:
        announce(str(Path(onnx_path).resolve()), args.announce_linger_s)
    return code
