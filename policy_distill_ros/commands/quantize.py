"""`policy-distill quantize`: int8 and fp16 variants of a student, with return, latency and size
side by side.

    policy-distill quantize --model runs/s/student.onnx [--variants int8,int8_dynamic,fp16]
        [--calibration bags/rosbag2_* | data.npz] [--eval-episodes 20] [--json q.json]

Calibration (int8): the observations of `--calibration` (recorded bags, replayed through the
student spec as training does, or a DistillDataset .npz); without it, the states the fp32
student visits itself on `--calibration-episodes` training seeds (0..N-1). Parity: each variant
against the fp32 file on the observations of `--parity-episodes` validation seeds (900000+k),
bounded by `training.quantize.DEFAULT_PARITY_ATOL` (or `--parity-atol VARIANT=X`); a variant
beyond its bound is not written. Then every file, fp32 included, drives `--eval-episodes`
held-out episodes (1000000+k) through `OnnxPolicy` (the node's path) and is timed on the same
observations, interleaved, on one thread. Variants are written next to the model
(`student_int8.onnx`, ...) or into `--out-dir`.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

HELP = "int8 / fp16 variants of a student: parity-bounded, with return, latency and size"
LOG = logging.getLogger("policy-distill.quantize")
COLUMNS = (("variant", "variant", ""), ("onnx_bytes", "onnx B", ",d"),
           ("size_ratio", "size/fp32", ".2f"), ("parity_max_abs_error", "max |a-a32|", ".2g"),
           ("parity_atol", "bound", ".2g"), ("parity_mean_abs_error", "mean", ".2g"),
           ("parity_mean_atol", "bound", ".2g"), ("mean_return", "return", ".1f"),
           ("std_return", "std", ".1f"), ("return_ratio", "ret/fp32", ".3f"),
           ("falls", "falls", "d"), ("mean_forward_distance_m", "forward m", ".1f"),
           ("p50_us", "p50 us", ".1f"), ("p99_us", "p99 us", ".1f"),
           ("p99_ratio", "p99/fp32", ".2f"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .evaluate import DEFAULT_TEACHER_SPEC, add_sim_arguments
    parser.add_argument("--model", required=True, help="the fp32 student policy file (.onnx)")
    parser.add_argument("--variants", default="int8,int8_dynamic,fp16",
                        help="comma-separated: int8 (static, calibrated), int8_dynamic, fp16")
    parser.add_argument("--out-dir", default=None, help="default: the model's directory")
    parser.add_argument("--calibration", nargs="*", default=None,
                        help="bags (globs) or DistillDataset .npz whose student observations "
                             "calibrate int8 (default: the student's own rollouts)")
    parser.add_argument("--teacher-spec", default=DEFAULT_TEACHER_SPEC,
                        help="the spec the bags were recorded with (replaying bags needs it)")
    parser.add_argument("--calibration-episodes", type=int, default=5,
                        help="without --calibration: fp32 student rollouts on training seeds")
    parser.add_argument("--parity-episodes", type=int, default=2,
                        help="validation-seed rollouts whose observations bound the parity")
    parser.add_argument("--parity-atol", action="append", default=[], metavar="VARIANT=X",
                        help="override a variant's max abs command error bound vs fp32")
    parser.add_argument("--parity-mean-atol", action="append", default=[], metavar="VARIANT=X",
                        help="override a variant's mean abs command error bound vs fp32")
    parser.add_argument("--all-layers-int8", action="store_true",
                        help="int8 variants: quantize the first layer too (default: float32)")
    parser.add_argument("--eval-episodes", type=int, default=20,
                        help="held-out episodes per file (0: parity and latency only)")
    parser.add_argument("--latency-rows", type=int, default=2000,
                        help="observation rows timed per file (interleaved)")
    add_sim_arguments(parser)
    parser.add_argument("--json", default=None, help="write every figure here")
    parser.add_argument("--no-progress", action="store_true")


def _bounds(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"parity bound {item!r}: expected VARIANT=NUMBER") from None
    return out


def _calibration_obs(args, student_spec, sim_config):
    from policy_distill_ros.training.inference_bench import student_observations
    from policy_distill_ros.training.rollout import check_training_seeds
    if args.calibration:
        from policy_distill_ros.core.spec import load_policy_spec

        from .dagger import initial_dataset
        data = initial_dataset(args.calibration, Path.cwd(), student_spec,
                                load_policy_spec(args.teacher_spec))
        return data.student_obs, f"{len(data.student_obs)} recorded observations"
    seeds = check_training_seeds(range(args.calibration_episodes), "calibration")
    obs = student_observations(args.model, sim_config, seeds, args.sim_seed)
    return obs, f"{len(obs)} observations of the fp32 student on training seeds 0..{seeds[-1]}"


def run(args: argparse.Namespace) -> int:
    from policy_distill_ros.core.policy_file import PolicyFileError, read_metadata
    from policy_distill_ros.training.evaluation import (
        evaluate_policy,
        format_table,
        held_out_seeds,
        validation_seeds,
    )
    from policy_distill_ros.training.inference_bench import (
        interleaved_latency,
        machine_load,
        student_observations,
    )
    from policy_distill_ros.training.quantize import (
        VARIANTS,
        QuantizationParityError,
        quantize_policy,
        variant_path,
    )
    from policy_distill_ros.training.rollout import OnnxActor

    from .evaluate import sim_config_from_args
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        LOG.error("unknown variant(s) %s; known: %s", unknown, list(VARIANTS))
        return 2
    model = Path(args.model)
    try:
        bounds = _bounds(args.parity_atol)
        mean_bounds = _bounds(args.parity_mean_atol)
        stray = sorted((set(bounds) | set(mean_bounds)) - set(variants))
        if stray:
            raise ValueError(f"parity bound for {stray}, which is not among --variants "
                             f"{variants}")
        spec = read_metadata(model).policy_spec
        sim_config = sim_config_from_args(args.sim_config, args.max_episode_steps)
        calibration, calibration_note = (None, "none")
        if "int8" in variants:
            calibration, calibration_note = _calibration_obs(args, spec, sim_config)
        parity_obs = student_observations(model, sim_config,
                                          validation_seeds(max(1, args.parity_episodes)),
                                          args.sim_seed)
    except (OSError, ValueError, PolicyFileError) as exc:
        LOG.error("%s", exc)
        return 1
    LOG.info("calibration: %s; parity: %d observations (validation seeds)", calibration_note,
             len(parity_obs))
    files = {"fp32": model}
    rows = {"fp32": {"variant": "fp32", "parity_max_abs_error": 0.0,
                     "parity_mean_abs_error": 0.0}}
    status = 0
    for variant in variants:
        dst = (Path(args.out_dir) / variant_path(model, variant).name) if args.out_dir \
            else variant_path(model, variant)
        try:
            path, parity = quantize_policy(model, variant, calibration, parity_obs, dst,
                                           bounds.get(variant), mean_bounds.get(variant),
                                           float_first_layer=not args.all_layers_int8)
        except QuantizationParityError as exc:
            LOG.error("%s", exc)
            rows[variant] = {"variant": variant + " (blocked)",
                             "parity_max_abs_error": exc.parity.max_abs_error,
                             "parity_atol": exc.parity.atol,
                             "parity_mean_abs_error": exc.parity.mean_abs_error,
                             "parity_mean_atol": exc.parity.mean_atol}
            status = 1
            continue
        except (OSError, ValueError, PolicyFileError) as exc:
            LOG.error("%s: %s", variant, exc)
            status = 1
            continue
        files[variant] = path
        rows[variant] = {"variant": variant, "path": str(path),
                         "parity_max_abs_error": parity.max_abs_error,
                         "parity_atol": parity.atol, "parity": parity.to_dict(),
                         "parity_mean_abs_error": parity.mean_abs_error,
                         "parity_mean_atol": parity.mean_atol}
        LOG.info("%s: %s (max abs error %.3g <= %g)", variant, path, parity.max_abs_error,
                 parity.atol)
    load = machine_load()
    latency = interleaved_latency({k: str(v) for k, v in files.items()},
                                  parity_obs[:max(1, args.latency_rows)])
    seeds = held_out_seeds(args.eval_episodes) if args.eval_episodes > 0 else []
    for name, path in files.items():
        row = rows[name]
        row["onnx_bytes"] = path.stat().st_size
        row["size_ratio"] = row["onnx_bytes"] / files["fp32"].stat().st_size
        row.update(latency[name])
        row["p99_ratio"] = latency[name]["p99_us"] / latency["fp32"]["p99_us"]
        if seeds:
            result = evaluate_policy(OnnxActor(path, spec), spec, sim_config, seeds,
                                     args.sim_seed, name, progress=not args.no_progress)
            summary = result.to_dict()
            row.update({k: summary[k] for k in ("mean_return", "std_return",
                                                "mean_forward_distance_m", "returns")})
            row["falls"] = summary["terminated_episodes"]
    if seeds:
        for row in rows.values():
            if "mean_return" in row:
                row["return_ratio"] = row["mean_return"] / rows["fp32"]["mean_return"]
    print(format_table(list(rows.values()), COLUMNS))
    print(f"latency: OnnxPolicy, 1 intra-op thread, {latency['fp32']['calls']} calls per file "
          f"interleaved, {load} at the start")
    if seeds:
        print(f"returns: held-out seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} episodes); "
              f"parity on {len(parity_obs)} validation-seed observations")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"model": str(model), "variants": rows, "seeds": seeds, "machine": load,
             "calibration": calibration_note, "parity_samples": int(len(parity_obs))},
            indent=2) + "\n")
    return status
