"""`policy-distill bench`: run the scripts in the repository's `bench/` directory.

    policy-distill bench                      # list them
    policy-distill bench student_latency -- --duration-s 20
    policy-distill bench all                  # every benchmark, one after the other

Each benchmark is a standalone script that prints its figures and its ratio against a baseline
measured in the same run; this command only finds them and runs them with this interpreter, one
at a time (a benchmark running next to another measures the other).
"""
from __future__ import annotations

import argparse
import ast
import logging
import subprocess
import sys
from pathlib import Path

HELP = "run the benchmarks in bench/ (one at a time) and print their figures"
LOG = logging.getLogger("policy-distill.bench")
BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
HELPERS = {"baseline_node"}   # imported by the benchmarks, not one itself


def available(bench_dir: Path = BENCH_DIR) -> dict[str, str]:
    """name -> first line of the script's docstring."""
    found = {}
    for path in sorted(bench_dir.glob("*.py")):
        if path.stem in HELPERS or path.stem.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        found[path.stem] = " ".join(doc.split("\n\n")[0].split())
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench-dir", type=Path, default=BENCH_DIR,
                        help="directory of the benchmark scripts (a source checkout's bench/)")
    parser.add_argument("names", nargs=argparse.REMAINDER,
                        help="benchmarks to run ('all' = every one; none: list them), then "
                             "'--' and arguments for the benchmark (one name only)")


def run(args: argparse.Namespace) -> int:
    if not args.bench_dir.is_dir():
        LOG.error(f"no benchmark directory {args.bench_dir}: benchmarks ship with a source "
                  f"checkout, not with an installed package; pass --bench-dir")
        return 2
    known = available(args.bench_dir)
    words = list(args.names)
    cut = words.index("--") if "--" in words else len(words)
    args.names, extra = words[:cut], words[cut + 1:]
    if not args.names:
        width = max(map(len, known), default=0)
        for name, doc in known.items():
            print(f"  {name:<{width}}  {doc}")
        return 0
    names = list(known) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in known]
    if unknown:
        LOG.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(known)}")
        return 2
    if extra and len(names) != 1:
        LOG.error("arguments after '--' go to one benchmark; name exactly one")
        return 2
    failed = []
    for name in names:
        print(f"=== bench/{name}.py {' '.join(extra)}".rstrip(), flush=True)
        code = subprocess.call([sys.executable, str(args.bench_dir / f"{name}.py"), *extra])
        if code != 0:
            failed.append(f"{name} (exit {code})")
    if failed:
        LOG.error(f"failed: {', '.join(failed)}")
        return 1
    return 0
