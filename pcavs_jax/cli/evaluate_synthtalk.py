"""`pcavs-jax evaluate-synthtalk`: a checkpoint's cross-driven generation and mechanisms on
SynthTalk's seen, unseen and self sets, beside the baselines.

  pcavs-jax evaluate-synthtalk --checkpoint WORKDIR_OR_CKPT --eval-set DIR/cross_driven/eval_set.npz
      [--sets unseen,seen] [--videos DIR] [--all-steps] [--no-ema] [--report PATH]

The work is in `pcavs_jax.evaluate.cross_driven` (`evaluate_all`, `evaluate_steps`); the
measures are described below and in `pcavs_jax.evaluate.mechanisms`.
"""
from __future__ import annotations

import argparse
import pathlib

from pcavs_jax.evaluate import cross_driven, mechanisms, report


def register(subparsers) -> argparse.ArgumentParser:
  """Adds the `evaluate-synthtalk` subcommand."""
  p = subparsers.add_parser(
      "evaluate-synthtalk", help="seen / unseen cross-driven generation, mechanisms, exact scores",
      description=f"{__doc__}\n{cross_driven.__doc__}\n{mechanisms.__doc__}",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="training workdir or exported checkpoint")
  p.add_argument("--eval-set", required=True,
                 help="SynthTalk OUT/cross_driven/eval_set.npz (or the folder): every set "
                      "beside it is scored (unseen, seen, self)")
  p.add_argument("--sets", default=None, help="comma-separated sets to score (default: all)")
  p.add_argument("--report", default=None, help="JSON report path (default: beside the checkpoint)")
  p.add_argument("--videos", default=None,
                 help="also write each triple as mp4 (with C's audio) in VIDEOS/<set>/")
  p.add_argument("--all-steps", action="store_true",
                 help="score every checkpoint kept in the workdir (the learning curve); the "
                      "rows go to <workdir>/synthtalk_curve.jsonl (_raw with --no-ema)")
  p.add_argument("--no-ema", dest="ema", action="store_false",
                 help="score a training workdir's trained parameters, not their moving average")
  p.set_defaults(func=run)
  return p


def _report_path(args: argparse.Namespace, stem: str, suffix: str) -> pathlib.Path:
  """--report, else <checkpoint>/<stem>[_raw]<suffix> (_raw: the parameters without average)."""
  if args.report:
    return pathlib.Path(args.report)
  return pathlib.Path(args.checkpoint) / f"{stem}{'' if args.ema else '_raw'}{suffix}"


def run(args: argparse.Namespace) -> int:
  """The `evaluate-synthtalk` subcommand."""
  sets = args.sets.split(",") if args.sets else None
  if args.all_steps:
    path = _report_path(args, "synthtalk_curve", ".jsonl")
    rows = cross_driven.evaluate_steps(args.checkpoint, args.eval_set, ema=args.ema, sets=sets,
                                       curve_path=path)
    print(report.curve_table(rows))
    print(f"curve: {path}")
    return 0
  result = cross_driven.evaluate_all(args.checkpoint, args.eval_set, ema=args.ema, sets=sets)
  print(report.summary_table(result))
  path = _report_path(args, "synthtalk_eval", ".json")
  cross_driven.write_report(result, path, args.eval_set, args.videos)
  print(f"report: {path}")
  return 0
