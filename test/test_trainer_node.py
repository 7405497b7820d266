"""trainer_node over DDS: Trigger -> "started" (then "busy"), per-epoch progress, a parity-checked
student announced on model_updated that the student node's loader accepts; a failing run is
reported on ~/status and the node stays up for the next one."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
import yaml
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from node_process import node_process
from policy_distill_ros.core.policy_file import OnnxPolicy
from policy_distill_ros.training.networks import TeacherConfig, TeacherPolicy
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.teacher_io import save_teacher
from ros_harness import CLIENT_SETTLE_S, LATCHED, RECORD, call_service, wait_until
from sim_bags import STUDENT_SPEC, TEACHER_SPEC, record_sim_bag, specs

pytestmark = pytest.mark.dds


class Peer:
    """Listens to the trainer's topics and calls its services, on its own executor thread."""

    def __init__(self) -> None:
        self.node = rclpy.create_node("trainer_test_peer")
        self.lock = threading.Lock()
        self.progress: list[Float64MultiArray] = []
        self.status: list[str] = []
        self.announced: list[str] = []
        self.node.create_subscription(Float64MultiArray, "/trainer_node/progress",
                                      lambda m: self._add(self.progress, m), RECORD)
        self.node.create_subscription(String, "/trainer_node/status",
                                      lambda m: self._add(self.status, m.data), LATCHED)
        self.node.create_subscription(String, "model_updated",
                                      lambda m: self._add(self.announced, m.data), LATCHED)
        self.resends = 0  # of the last call
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _add(self, target: list, item) -> None:
        with self.lock:
            target.append(item)

    def call(self, srv_type, name: str, request, timeout_s: float = 20.0):
        response, self.resends = call_service(self.node, srv_type, name, request, timeout_s,
                                              settle_s=CLIENT_SETTLE_S)
        return response

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)
        self.node.destroy_node()


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


def make_setup(tmp_path: Path, epochs: int) -> Path:
    record_sim_bag(tmp_path / "bag", episodes=6, max_steps=30)
    torch.manual_seed(0)
    teacher = TeacherPolicy(TeacherConfig(obs_size=specs()[1].observation.size, action_size=8,
                                          hidden_sizes=(128, 128)))
    save_teacher(teacher, EmpiricalNormalizer(NormalizerConfig(size=specs()[1].observation.size)),
                 tmp_path / "teacher")
    config = {"teacher": str(tmp_path / "teacher"), "student_spec": str(STUDENT_SPEC),
              "teacher_spec": str(TEACHER_SPEC), "bags": [str(tmp_path / "bag")],
              "run_name": "node_run", "runs_dir": str(tmp_path / "runs"),
              "max_student_param_ratio": None,
              "train": {"student": {"kind": "history_mlp", "hidden_sizes": [32, 32]},
                        "epochs": epochs, "batch_size": 16, "val_fraction": 0.2}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_trigger_progress_and_announced_model(tmp_path, ros):
    config = make_setup(tmp_path, epochs=40)
    peer = Peer()
    try:
        with node_process("trainer_node", "trainer_node",
                          {"config_path": str(config), "epochs": 25}) as proc:
            first = peer.call(Trigger, "/trainer_node/train", Trigger.Request())
            # a re-sent request (the first answer lost) finds the run it started: "busy"
            assert (first.success and first.message == "started") \
                or (peer.resends and "busy" in first.message), first.message
            second = peer.call(Trigger, "/trainer_node/train", Trigger.Request())
            assert not second.success and "busy" in second.message
            wait_until(lambda: peer.announced, 240, "model_updated",)
            path = Path(peer.announced[-1])
            assert path.is_file() and path == (tmp_path / "runs/node_run/student.onnx").resolve()
            policy = OnnxPolicy(str(path), expected=specs()[0])
            assert policy(np.zeros(102, np.float32)).shape == (8,)
            wait_until(lambda: len(peer.progress) >= 25, 10, "25 progress messages")
            with peer.lock:
                progress = list(peer.progress)
                status = list(peer.status)
            assert progress[0].layout.dim[0].label == "epoch,epochs,train_loss,val_loss"
            assert [m.data[0] for m in progress] == list(range(1, 26))   # epochs override
            assert all(m.data[1] == 25 for m in progress)
            assert progress[-1].data[2] < progress[0].data[2]             # train loss fell
            assert np.isfinite(progress[-1].data[3])
            assert status[-1] == f"done: {path}"
            for name in ("report.md", "metrics.json", "losses.png",
                         "per_joint_action_error.png", "config.yaml"):
                assert (tmp_path / "runs/node_run" / name).is_file(), name

            # a failing run (bags that do not exist) is reported, the node stays up
            bad = Parameter(name="bags", value=ParameterValue(
                type=ParameterType.PARAMETER_STRING, string_value=str(tmp_path / "missing_bag")))
            result = peer.call(SetParameters, "/trainer_node/set_parameters",
                               SetParameters.Request(parameters=[bad]))
            assert result.results[0].successful
            n_announced = len(peer.announced)
            again = peer.call(Trigger, "/trainer_node/train", Trigger.Request())
            assert again.success or (peer.resends and "busy" in again.message), again.message
            wait_until(lambda: peer.status and peer.status[-1].startswith("failed"), 60,
                       "failed status")
            assert "missing_bag" in peer.status[-1]
            assert len(peer.announced) == n_announced
            assert proc.poll() is None
    finally:
        peer.close()


def test_cli_train_announces_the_exported_model(tmp_path, ros):
    import subprocess
    import sys
    config = make_setup(tmp_path, epochs=2)
    peer = Peer()
    try:
        proc = subprocess.run([sys.executable, "-m", "policy_distill_ros.cli", "train", "--config",
                               str(config), "--out", str(tmp_path / "cli_run"), "--no-progress",
                               "--announce", "--announce-linger-s", "5"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        wait_until(lambda: peer.announced, 10, "model_updated from the CLI")
        assert peer.announced[-1] == str(tmp_path / "cli_run" / "student.onnx")
    finally:
        peer.close()
