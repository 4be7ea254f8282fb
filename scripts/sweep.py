"""Runs a list of config variants into separate workdirs and tabulates their final metrics.

Each variant is a config argument (`--args`, the part after ':' in `--config f.py:ARG`) and/or a
set of overrides (`--overrides`, one quoted string per variant); runs go one after the other,
each `pcavs-jax train` in its own process, and a finished run is not repeated.

  python scripts/sweep.py --config configs/ablations.py --workdir-root /tmp/ablations \
      --args ablation=pose_dim_6 ablation=pose_dim_12 ablation=pose_dim_36 \
      --common "--config.data_dir=/tmp/synthtalk" --eval-set /tmp/synthtalk/cross_driven/eval_set.npz
  python scripts/sweep.py --config configs/synthtalk.py --workdir-root /tmp/lr \
      --overrides "--config.train.lr=1e-3" "--config.train.lr=3e-4"
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import subprocess
import sys

from pcavs_jax.data.files import read_jsonl, write_json

TABLE_KEYS = ("step", "g_loss", "d_loss", "identity_ce", "sync_contrastive_va", "sync_l1")
EVAL_KEYS = ("ssim", "psnr", "mouth_err", "pose_err", "identity_err", "lag")


def _name(arg: str, overrides: str) -> str:
  text = "_".join(filter(None, [arg, overrides.replace("--config.", "")]))
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "base"


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True)
  p.add_argument("--workdir-root", required=True)
  p.add_argument("--args", nargs="*", default=[""], help="config arguments, one per variant")
  p.add_argument("--overrides", nargs="*", default=[""], help="override strings, one per variant")
  p.add_argument("--common", default="", help="overrides added to every variant")
  p.add_argument("--eval-set", default=None, help="SynthTalk eval_set.npz: score each final model")
  a = p.parse_args()
  root = pathlib.Path(a.workdir_root)
  root.mkdir(parents=True, exist_ok=True)
  variants = [(arg, ov) for arg in a.args for ov in a.overrides]
  rows = []
  for arg, overrides in variants:
    name = _name(arg, overrides)
    workdir = root / name
    config = f"{a.config}:{arg}" if arg else a.config
    cmd = [sys.executable, "-m", "pcavs_jax.cli.train", f"--config={config}", f"--workdir={workdir}",
           *shlex.split(a.common), *shlex.split(overrides)]
    done = workdir / "sweep_done"
    if not done.exists():
      print(f"[sweep] {name}: {' '.join(cmd)}", flush=True)
      rc = subprocess.call(cmd)
      if rc != 0:
        print(f"[sweep] {name}: failed with exit code {rc}; continuing", flush=True)
        rows.append({"variant": name, "status": f"failed ({rc})"})
        continue
      done.touch()
    row = {"variant": name, "status": "ok"}
    history = workdir / "train_history.jsonl"
    if history.exists() and (logged := read_jsonl(history)):
      row.update({k: logged[-1].get(k) for k in TABLE_KEYS})
    if a.eval_set:
      from pcavs_jax.evaluate.cross_driven import evaluate_checkpoint
      report = evaluate_checkpoint(str(workdir), a.eval_set)
      row.update({k: report["model"].get(k) for k in EVAL_KEYS})
    rows.append(row)
  keys = ["variant", "status"] + [k for k in TABLE_KEYS + EVAL_KEYS if any(k in r for r in rows)]
  print("\n" + " | ".join(keys))
  for r in rows:
    print(" | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys))
  write_json(root / "sweep_results.json", rows)
  print(f"\n[sweep] table: {root / 'sweep_results.json'}")
  return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
  raise SystemExit(main())
