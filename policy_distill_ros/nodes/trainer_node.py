"""trainer_node: distillation on demand, the same run as `policy-distill train`.

Service `~/train` (std_srvs/Trigger) starts a run in a worker thread and answers at once:
"started", or "busy" while one is running. Topics: `~/progress` (std_msgs/Float64MultiArray,
layout labels `epoch,epochs,train_loss,val_loss`, one per epoch), `~/status` (std_msgs/String,
latched: started / done <path> / failed <reason>), and on a passing export `model_updated`
(std_msgs/String, latched: the student's path) for student nodes with `reload_on_announce`.
Parameters are read at each trigger: `config_path`, `bags` (comma-separated; '' = the config's),
`out` ('' = runs/<run_name>), `epochs` (0 = the config's), `checkpoint_every` (epochs between
checkpoints in <out>/checkpoints; -1 = the config's, 0 = none) and `resume` (a checkpoint file or
directory of this run to continue from; '' = start afresh). The logic is training/pipeline.py.
"""
from __future__ import annotations

import os
import sys
import threading

from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger

from policy_distill_ros.nodes.ros_common import (
    LATCHED_QOS,
    declare,
    spin_node,
    warn_unknown_parameters,
)

PROGRESS_LABELS = ("epoch", "epochs", "train_loss", "val_loss")


class TrainerNode(Node):
    """`~/train` runs training/pipeline.py in a worker thread, so the node keeps answering
    (a second trigger gets "busy") and reports progress on topics while a run lasts."""

    def __init__(self) -> None:
        super().__init__("trainer_node")
        declare(self, "config_path", "config/train.yaml", "training YAML (config/train.yaml "
                "format)", check=lambda path: None if os.path.isfile(path) else
                f"no such file {path!r}")
        declare(self, "bags", "", "comma-separated bag directories; '' = the config's bags")
        declare(self, "out", "", "run directory; '' = runs/<run_name> of the config")
        declare(self, "epochs", 0, "override the config's epochs; 0 = keep", min_value=0,
                max_value=1_000_000)
        declare(self, "checkpoint_every", -1, "epochs between checkpoints; -1 = the config's, "
                "0 = none", min_value=-1, max_value=1_000_000)
        declare(self, "resume", "", "continue from this checkpoint file or checkpoint "
                "directory (its newest); '' = start afresh")
        warn_unknown_parameters(self)
        self._progress = self.create_publisher(Float64MultiArray, "~/progress", 50)  # reliable
        self._status = self.create_publisher(String, "~/status", LATCHED_QOS)
        self._announce = self.create_publisher(String, "model_updated", LATCHED_QOS)
        self._busy = threading.Lock()
        self._worker: threading.Thread | None = None
        self.create_service(Trigger, "~/train", self._on_train)
        self.get_logger().info("ready: call ~/train to distill a student")

    def _on_train(self, request: Trigger.Request, response: Trigger.Response):
        if not self._busy.acquire(blocking=False):
            response.success, response.message = False, "busy: a training run is in progress"
            return response
        params = {name: self.get_parameter(name).value
                  for name in ("config_path", "bags", "out", "epochs", "checkpoint_every",
                               "resume")}
        self._worker = threading.Thread(target=self._run, args=(params,), daemon=True,
                                        name="trainer")
        self._worker.start()
        response.success, response.message = True, "started"
        return response

    def _run(self, params: dict) -> None:
        try:
            import dataclasses

            from policy_distill_ros.training.pipeline import load_run_config, run_training
            bags = [b.strip() for b in params["bags"].split(",") if b.strip()] or None
            every = params["checkpoint_every"]
            config = load_run_config(params["config_path"], overrides={
                "bags": bags, "out": params["out"] or None,
                "checkpoint_every": every if every >= 0 else None})
            if params["epochs"]:
                config.train = dataclasses.replace(config.train, epochs=params["epochs"])
            epochs = config.train.epochs
            self._say(f"started: {config.out_dir}")
            outputs = run_training(config, progress=False,
                                   on_epoch=lambda record: self._on_epoch(record, epochs),
                                   resume=params["resume"] or None)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the node lives on
            self.get_logger().error(f"training failed: {exc}")
            self._say(f"failed: {exc}")
        else:
            path = str(outputs.onnx_path.resolve())
            self._announce.publish(String(data=path))
            m = outputs.result.metrics
            self.get_logger().info(
                f"exported {path} (parity {outputs.parity.max_abs_error:.2g}, val action MSE "
                f"{m.get('val_action_error_vs_teacher', {}).get('mse', float('nan')):.4g}); "
                f"announced on model_updated")
            self._say(f"done: {path}")
        finally:
            self._busy.release()

    def _on_epoch(self, record: dict, epochs: int) -> None:
        msg = Float64MultiArray()
        msg.layout.dim = [MultiArrayDimension(label=",".join(PROGRESS_LABELS),
                                              size=len(PROGRESS_LABELS),
                                              stride=len(PROGRESS_LABELS))]
        msg.data = [float(record["epoch"]), float(epochs),
                    float(record["train"].get("total", float("nan"))),
                    float(record["val"].get("total", float("nan")))]
        self._progress.publish(msg)

    def _say(self, text: str) -> None:
        self._status.publish(String(data=text))

    def destroy_node(self) -> None:
        worker = self._worker
        if worker is not None and worker.is_alive():
            self.get_logger().warning("shutting down while a training run is in progress")
        super().destroy_node()


def main(args=None) -> int:
    """`ros2 run policy_distill_ros trainer_node`: exit code 0 on Ctrl-C or SIGTERM (spin_node)."""
    return spin_node(TrainerNode, args)


if __name__ == "__main__":
    sys.exit(main())
