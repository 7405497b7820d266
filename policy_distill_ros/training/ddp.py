"""Data-parallel training under torchrun: every rank runs the same `pipeline.run_training`.

    .venv/bin/torchrun --nproc-per-node 2 -m policy_distill_ros.training.ddp \
        --config config/train.yaml [--bags ...] [--out runs/NAME] [--dataset data.npz] \
        [--checkpoint-every N] [--resume PATH]

(or `policy-distill train --nproc-per-node 2 ...`, which starts exactly this). Backend: nccl
when CUDA is available (one GPU per local rank), gloo on CPU. Each rank builds the same dataset
(deterministic), DistributedDataParallel averages gradients, a DistributedSampler shards every
epoch, and rank 0 alone exports and writes the run directory and its checkpoints (every rank
reads the one it resumes from). Only this entry point joins a process group: a single-process
run (`policy-distill train` without `--nproc-per-node`) goes straight to `pipeline.py`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist

from .pipeline import add_run_arguments, run_from_args

__all__ = ["init_from_env", "main"]

LOG = logging.getLogger("policy_distill_ros.ddp")


def init_from_env(backend: str = "auto") -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
    environment); returns (rank, world_size). Without torchrun's variables: (0, 1), no group."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _save_rank_state(directory: str, result, rank: int) -> None:
    """Every rank's trained parameters (tests compare them across ranks)."""
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    state = {f"student.{k}": v.detach().cpu().contiguous()
             for k, v in result.student.state_dict().items()}
    state.update({f"loss.{k}": v.detach().cpu().contiguous()
                  for k, v in result.loss_module.state_dict().items()})
    save_file(state, os.path.join(directory, f"rank{rank}.safetensors"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="policy_distill_ros.training.ddp",
                                     description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"))
    parser.add_argument("--save-rank-state", help="directory for every rank's final parameters")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    rank, world = init_from_env(args.backend)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        outputs = run_from_args(args, progress=rank == 0)
        if args.save_rank_state:
            _save_rank_state(args.save_rank_state, outputs.result, rank)
        if rank == 0:
            m = outputs.result.metrics
            LOG.info("%d process(es): %.0f samples/s per process (%.0f total), %.3f s/epoch; "
                     "student -> %s", world, m["samples_per_s"], m["samples_per_s_all_ranks"],
                     m["epoch_time_s"], outputs.onnx_path)
        if world > 1:
            dist.barrier()
    except Exception as exc:  # noqa: BLE001 - one clear line per rank, non-zero exit
        LOG.error("rank %d: %s: %s", rank, type(exc).__name__, exc)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
