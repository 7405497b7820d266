"""One training run from a YAML file: bags -> dataset -> fit -> ONNX export -> report.

Shared by `policy-distill train`, the trainer node and `torchrun` data-parallel runs (`ddp.py`),
so all three do exactly the same thing; a single process never touches the DDP module. Output
directory `runs/<run_name>/`:

    student.onnx                  the deployable student (parity-checked, atomic write)
    report.md                     teacher-vs-student table, data, training, export
    metrics.json                  everything the report shows (re-render with report.update_report)
    losses.png, per_joint_action_error.png
    config.yaml                   the resolved configuration of this run
    checkpoints/epoch_NNNN.pt     with checkpoint_every N > 0: resumable state (checkpoint.py)

Relative paths in the YAML are resolved against the working directory, then against the
config file's directory and its parent (a `config/train.yaml` inside the package names
`models/...` relative to the package root).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policy_distill_ros.core.config_keys import check_keys, read_yaml
from policy_distill_ros.core.contract import POLICY_ACTION
from policy_distill_ros.core.spec import PolicySpec, load_policy_spec

from .checkpoint import CheckpointOptions, resolve_resume
from .dataset import BagStats, DatasetError, DistillDataset, dataset_from_bags, iter_bag_paths
from .export import ExportConfig, ParityReport
from .networks import TeacherPolicy, build_student, count_parameters
from .normalizer import EmpiricalNormalizer, NormalizerConfig
from .report import write_report
from .teacher_loading import load_teacher_any
from .trainer import TrainConfig, TrainingError, TrainResult, export_student, fit

__all__ = ["RunConfig", "RunOutputs", "load_run_config", "run_training", "find_config",
           "resolve_path", "add_run_arguments", "run_from_args", "STUDENT_FILE", "CONFIG_FILE",
           "CHECKPOINT_DIR"]

LOG = logging.getLogger(__name__)
STUDENT_FILE = "student.onnx"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
_RUN_KEYS = ("teacher", "teacher_normalizer", "student_spec", "teacher_spec", "bags",
             "action_topic", "min_episode_return", "run_name", "runs_dir", "out",
             "max_student_param_ratio", "allow_incomplete_bags", "checkpoint_every", "train",
             "export")


@dataclass
class RunConfig:
    """A training run (config/train.yaml). Paths are resolved by `load_run_config`."""

    teacher: str                            # teacher directory | SB3 .zip | rsl_rl .pt
    student_spec: str
    teacher_spec: str
    bags: list[str]
    train: TrainConfig
    teacher_normalizer: str | None = None   # SB3 zip: VecNormalize .pkl or obs-norm .json
    action_topic: str = POLICY_ACTION
    min_episode_return: float | None = None
    run_name: str = "student"
    runs_dir: str = "runs"
    out: str | None = None                  # overrides runs_dir/run_name
    max_student_param_ratio: float | None = 0.02
    allow_incomplete_bags: bool = False
    checkpoint_every: int = 0               # epochs between checkpoints; 0 = none
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        if isinstance(self.bags, str):
            self.bags = [self.bags]
        if not isinstance(self.bags, list) or not all(isinstance(b, str) for b in self.bags):
            raise ValueError(f"bags must be a list of bag paths, got {self.bags!r}")
        if not self.run_name or "/" in self.run_name:
            raise ValueError(f"run_name must be a plain name, got {self.run_name!r}")
        if self.max_student_param_ratio is not None and not 0 < self.max_student_param_ratio:
            raise ValueError(f"max_student_param_ratio must be > 0 or null, got "
                             f"{self.max_student_param_ratio!r}")
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) \
                or self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0 (epochs; 0 = off), got "
                             f"{self.checkpoint_every!r}")
        if not isinstance(self.train, TrainConfig):
            raise ValueError("train must be a TrainConfig")
        if isinstance(self.export, dict):
            self.export = ExportConfig(**self.export)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.runs_dir) / self.run_name

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _RUN_KEYS}
        d["train"] = self.train.to_dict()
        d["export"] = dataclasses.asdict(self.export)
        return d


def resolve_path(path: str, config_dir: Path | None, must_exist: bool = True) -> str:
    """`path` from the working directory, else the config's directory or its parent (see the
    module docstring); globs are kept when they match there."""
    candidates = [Path(path)]
    if config_dir is not None and not Path(path).is_absolute():
        candidates += [config_dir / path, config_dir.parent / path]
    for c in candidates:
        if c.exists():
            return str(c)
    if any(ch in path for ch in "*?["):
        for base in candidates[1:]:
            import glob
            if glob.glob(str(base)):
                return str(base)
    if must_exist:
        raise ValueError(f"{path!r} does not exist (looked in {[str(c) for c in candidates]})")
    return path


def find_config(path: str | os.PathLike) -> Path:
    """`path` as given, else (relative path) inside the installed package's share directory,
    so `ros2 run policy_distill_ros trainer_node` finds `config/train.yaml` from any directory."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    try:
        from ament_index_python.packages import get_package_share_directory
        shared = Path(get_package_share_directory("policy_distill_ros")) / path
    except (ImportError, LookupError, ValueError, OSError):
        return path   # not installed (PackageNotFoundError), or no ROS environment: OSError
        # "AMENT_PREFIX_PATH is not set"; load_run_config then names the missing file
    return shared if shared.exists() else path


def load_run_config(path: str | os.PathLike | None = None, data: Mapping | None = None,
                    overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """RunConfig from a YAML file (or a dict), with command-line overrides (bags, out, ...)."""
    config_dir = None
    if path is not None:
        path = find_config(path)
        data = read_yaml(path, "training config")
        config_dir = path.resolve().parent
    data = dict(data or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    where = f"training config {path}" if path else "training config"
    check_keys(data, _RUN_KEYS, where)
    missing = [k for k in ("teacher", "student_spec", "teacher_spec", "bags", "train")
               if not data.get(k)]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    try:
        for key in ("teacher", "student_spec", "teacher_spec", "teacher_normalizer"):
            if data.get(key):
                data[key] = resolve_path(str(data[key]), config_dir)
        bags = data["bags"] if isinstance(data["bags"], list) else [data["bags"]]
        data["bags"] = [resolve_path(str(b), config_dir, must_exist=False) for b in bags]
        student_spec = load_policy_spec(data["student_spec"])
        data["train"] = TrainConfig.from_dict(dict(data["train"]), student_spec=student_spec)
        return RunConfig(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass
class RunOutputs:
    """What a run produced (paths only on rank 0)."""

    out_dir: Path
    onnx_path: Path | None
    report_path: Path | None
    metrics_path: Path | None
    result: TrainResult
    parity: ParityReport | None
    summary: dict


def _teacher_onnx_bytes(teacher: TeacherPolicy, normalizer: EmpiricalNormalizer | None
                        ) -> int | None:
    """Size the teacher would have as an ONNX policy file (same exporter as the student)."""
    try:
        import torch

        from .export import export_onnx, inference_module
        norm = normalizer or EmpiricalNormalizer(NormalizerConfig(size=teacher.config.obs_size))
        module = inference_module(teacher, norm)
        model, _ = export_onnx(module, torch.zeros(1, teacher.config.obs_size), ExportConfig())
        return len(model.SerializeToString())
    except Exception as exc:  # noqa: BLE001 - a report figure, never a reason to fail the run
        LOG.warning("teacher ONNX size not measured: %s", exc)
        return None


def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The run options shared by `policy-distill train` and the torchrun entry (`ddp.py`)."""
    parser.add_argument("--config", default="config/train.yaml", help="training YAML")
    parser.add_argument("--bags", nargs="+", help="bag directories (override the config)")
    parser.add_argument("--out", help="run directory (default runs/<run_name>)")
    parser.add_argument("--teacher", help="teacher (override the config)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--dataset", help="a saved dataset .npz instead of reading the bags")
    parser.add_argument("--save-dataset", help="also save the dataset built from the bags (.npz)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="write <out>/checkpoints/epoch_NNNN.pt every N epochs and at the "
                        "last (override checkpoint_every; 0 = none)")
    parser.add_argument("--resume", metavar="PATH",
                        help="continue this run from a checkpoint file, or from the newest in a "
                        "checkpoint directory (same config, teacher, data and process count)")


def run_from_args(args: argparse.Namespace, progress: bool = True,
                  on_epoch: Callable[[dict], Any] | None = None) -> RunOutputs:
    """Load the config, the dataset (bags or --dataset) and run `add_run_arguments`' options."""
    config = load_run_config(args.config, overrides={
        "bags": args.bags, "out": args.out, "teacher": args.teacher,
        "checkpoint_every": args.checkpoint_every})
    if args.epochs is not None:
        config.train = dataclasses.replace(config.train, epochs=args.epochs)
    resume = resolve_resume(args.resume) if args.resume else None   # before reading any data
    dataset = None
    if args.dataset:
        dataset = DistillDataset.load(args.dataset)
    elif args.save_dataset:
        dataset = dataset_from_bags(iter_bag_paths(config.bags),
                                    load_policy_spec(config.student_spec),
                                    load_policy_spec(config.teacher_spec), config.action_topic,
                                    config.allow_incomplete_bags)
        if _rank() == 0:
            dataset.save(args.save_dataset)
    return run_training(config, progress=progress, on_epoch=on_epoch, dataset=dataset,
                        resume=resume)


def run_training(config: RunConfig, progress: bool = True,
                 on_epoch: Callable[[dict], Any] | None = None,
                 dataset: DistillDataset | None = None,
                 resume: str | os.PathLike | None = None) -> RunOutputs:
    """Build the dataset, train, export and report (see the module docstring).

    `resume`: a checkpoint file, or a checkpoint directory (its newest), of this same run; a
    checkpoint of another run (config, teacher, data, process count) is refused by field.

    Under torch.distributed every rank trains; rank 0 alone writes the outputs. Raises
    DatasetError / TrainingError / ExportParityError with the reason; a failed export leaves
    no student.onnx behind (and an earlier one of the same run untouched).
    """
    started = time.time()
    resume = resolve_resume(resume) if resume else None   # a wrong path fails before any work
    student_spec: PolicySpec = load_policy_spec(config.student_spec)
    teacher_spec: PolicySpec = load_policy_spec(config.teacher_spec)
    teacher, teacher_norm, teacher_info = load_teacher_any(config.teacher,
                                                           config.teacher_normalizer)
    if teacher.config.obs_size != teacher_spec.observation.size:
        raise TrainingError(f"teacher {config.teacher} takes {teacher.config.obs_size} "
                            f"observations, teacher spec {config.teacher_spec} gives "
                            f"{teacher_spec.observation.size}")
    stats: list[BagStats] = []
    if dataset is None:
        bags = iter_bag_paths(config.bags)
        dataset = dataset_from_bags(bags, student_spec, teacher_spec, config.action_topic,
                                    config.allow_incomplete_bags, stats=stats)
    full_size = len(dataset)
    dataset = dataset.filter_episodes(config.min_episode_return)
    if not len(dataset):
        raise DatasetError(f"no episode reaches min_episode_return {config.min_episode_return} "
                           f"({full_size} samples before filtering)")
    s_params = count_parameters(build_student(config.train.student))
    t_params = count_parameters(teacher)
    if config.max_student_param_ratio is not None and \
            s_params > config.max_student_param_ratio * t_params:
        raise TrainingError(f"student would have {s_params} parameters, more than "
                            f"{config.max_student_param_ratio:.1%} of the teacher's {t_params} "
                            f"(max_student_param_ratio); choose smaller hidden_sizes")
    checkpoints = CheckpointOptions(config.checkpoint_dir, config.checkpoint_every, resume)
    result = fit(teacher, teacher_norm, dataset, config.train, progress=progress,
                 on_epoch=on_epoch, action_spec=student_spec.action, checkpoints=checkpoints)
    out_dir = config.out_dir
    summary = {
        "run_name": out_dir.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "config": config.to_dict(),
        "teacher": {"path": str(config.teacher), "sha256": teacher_info.sha256,
                    "obs_size": teacher.config.obs_size,
                    "privileged_topics": list(teacher_spec.observation.privileged_topics),
                    "hidden_sizes": list(teacher.config.hidden_sizes)},
        "student": {"obs_size": student_spec.observation.size,
                    "joints": list(student_spec.action.joints),
                    "privileged_topics": list(student_spec.observation.privileged_topics)},
        "data": {"bags": list(dataset.sources), "samples_before_filter": full_size,
                 "min_episode_return": config.min_episode_return,
                 "bag_stats": [s.to_dict() for s in stats]},
        "metrics": result.metrics,
        "history": result.history,
    }
    if _rank() != 0:
        return RunOutputs(out_dir, None, None, None, result, None, summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / STUDENT_FILE
    provenance = {"teacher_hash": teacher_info.sha256, "teacher": str(config.teacher),
                  "dataset": list(dataset.sources), "samples": len(dataset),
                  "losses": config.train.loss.to_dict()}
    parity = export_student(result, student_spec, onnx_path, provenance, config.export)
    summary["export"] = {"path": str(onnx_path), **parity.to_dict()}
    summary["teacher"]["onnx_bytes"] = _teacher_onnx_bytes(teacher, teacher_norm)
    summary["student"]["onnx_bytes"] = onnx_path.stat().st_size
    tmp = out_dir / f".{CONFIG_FILE}.tmp-{os.getpid()}"
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    os.replace(tmp, out_dir / CONFIG_FILE)
    paths = write_report(out_dir, summary)
    LOG.info("run %s: student %d params (%.2f%% of teacher), val action MSE vs teacher %.4g, "
             "export parity %.2g -> %s", out_dir, s_params, 100.0 * s_params / t_params,
             result.metrics.get("val_action_error_vs_teacher", {}).get("mse", float("nan")),
             parity.max_abs_error, onnx_path)
    return RunOutputs(out_dir, onnx_path, paths["report"], paths["metrics"], result, parity,
                      summary)
