"""`policy-distill`: one command for the whole pipeline, usable without `ros2 launch`.

Each subcommand lives in `policy_distill_ros.commands.<name>` and exposes `HELP` (one line),
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when their subcommand
runs, so `policy-distill deploy` on a robot never imports torch.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# name -> module under policy_distill_ros.commands, in the order `--help` lists them.
COMMANDS = {
    "demo": "demo",
    "deploy": "deploy",
    "record": "record",
    "import-teacher": "import_teacher",
    "train": "train",
    "dagger": "dagger",
    "eval": "evaluate",
    "bench": "bench",
    "quantize": "quantize",
    "robustness": "robustness",
    "sweep": "sweep",
}

# One line each for `--help`, kept here so listing commands imports nothing heavy.
SUMMARIES = {
    "demo": "whole pipeline on the embedded simulator: record, distill, DAgger, deploy, report",
    "deploy": "student node + timing monitor in closed loop; prints what the monitor measured",
    "record": "teacher demonstrations from the embedded simulator into a rosbag2 (MCAP)",
    "import-teacher": "convert an rsl_rl / Stable-Baselines3 checkpoint to the teacher format",
    "train": "distill a student from bags (policy-distill train --config config/train.yaml)",
    "dagger": "DAgger rounds: the student drives, the teacher labels, data aggregates",
    "eval": "closed-loop teacher vs student on held-out randomized episodes",
    "bench": "run the benchmarks in bench/ and print their figures",
    "quantize": "int8 / fp16 variants of a student: parity-bounded, return, latency, size",
    "robustness": "teacher vs student outside the training ranges: returns, falls, plot",
    "sweep": "ladder of student sizes/kinds from the same data: return vs params, latency, memory",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="policy-distill", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        sub.add_parser(name, help=SUMMARIES[name], add_help=False)
    return parser


def load_command(name: str):
    return importlib.import_module(f"policy_distill_ros.commands.{COMMANDS[name]}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    known, rest = top.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if known.verbose else logging.INFO,
                        format="[%(levelname)s] %(name)s: %(message)s")
    try:
        module = load_command(known.command)
    except ModuleNotFoundError as err:
        if err.name != f"policy_distill_ros.commands.{COMMANDS[known.command]}":
            raise
        top.error(f"'{known.command}' is not available in this installation ({err.name} missing)")
    parser = argparse.ArgumentParser(prog=f"policy-distill {known.command}",
                                     description=getattr(module, "HELP", SUMMARIES[known.command]))
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("policy-distill").warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
