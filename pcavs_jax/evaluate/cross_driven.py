"""SynthTalk's evaluation of a checkpoint: cross-driven generation of every set, on identities
seen in training and on unseen ones, scored beside the baselines, with the mechanism measures.

Sets (`eval_sets.set_paths`; each triple drives identity from clip A's first frame, head pose
from clip B's frames and mouth from clip C's audio, scaled by the model's audio mouth weight):
  unseen  test identities (`eval_set.npz`);
  seen    held-out clips of training identities (`seen_set.npz`);
  self    training clips driven by themselves (`self_set.npz`, the memorisation check).

Per set: `generation_rows` (SSIM, PSNR, mouth and pose errors and their ratios to the
static-mouth and reference-pose baselines, identity error, audio-to-mouth lag of the generated
video; `scoring`) and `mechanisms.mechanism_measures` (sync, pose code, identity).
`evaluate_steps` scores every kept checkpoint of a workdir: the learning curves.
"""
from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from pcavs_jax.data import files
from pcavs_jax.evaluate import mechanisms, scoring

PathLike = str | os.PathLike
ROW_KEYS = ("ssim", "psnr", "mouth_ratio", "pose_ratio", "mouth_err", "pose_err", "identity_err",
            "lag", "abs_lag", "sync")


def generate_cross_driven(model, variables, eval_set, batch_size: int = 16,
                          triples: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """Drives every triple of `eval_set` (or those named in `triples`) in memory, through the
  generation runner: {triple_id: (T, H, W, 3) uint8}."""
  from pcavs_jax.infer.datasets import eval_set_jobs
  from pcavs_jax.infer.runner import FrameDriver
  driver = FrameDriver(model, variables, batch_size)
  if eval_set.resolution != driver.resolution:
    raise ValueError(f"eval set frames are {eval_set.resolution} px, the model draws "
                     f"{driver.resolution} px")
  return {job.name: driver.drive_job(job) for job in eval_set_jobs(eval_set)
          if triples is None or job.name in triples}


def generation_rows(generated: dict[str, np.ndarray], eval_set, baselines: dict[str, dict]
                    ) -> tuple[dict[str, dict], dict[str, dict]]:
  """Scores generated videos of the triples they name: ({'model': row, baseline: row, ...},
  the model's per-triple scores); every row carries the ratios (`scoring.target_ratios`)."""
  from pcavs_jax.data.synthtalk import eval_sets
  sub = eval_sets.EvalSet(eval_set.resolution, [eval_set[i] for i in generated])
  result = scoring.score(generated, sub)
  per_triple = result.pop("per_triple")
  rows = {"model": result, **baselines}
  ok = all(name in baselines for _, name in scoring.RATIO_BASELINES.values())
  for row in rows.values():
    row.update(scoring.target_ratios(row, baselines) if ok
               else {k: math.nan for k in scoring.RATIO_BASELINES})
  return rows, per_triple


def evaluate_set(model, variables, set_path: PathLike, eval_set=None, batch_size: int = 32,
                 triples: Sequence[str] | None = None, generated: bool = False) -> dict:
  """Every measure of one set: {'rows': generation rows, 'mechanisms': ..., 'per_triple': ...}
  (+ 'generated' frames when asked). `triples` limits the generation (and its baselines) to
  those triple ids; the mechanisms read every triple."""
  from pcavs_jax.data.synthtalk import eval_sets
  eval_set = eval_set or eval_sets.load_eval_set(set_path)
  frames = generate_cross_driven(model, variables, eval_set, batch_size, triples)
  rows, per_triple = generation_rows(frames, eval_set,
                                     scoring.baseline_rows(set_path, eval_set, list(frames)))
  codes = mechanisms.encode_set(model, variables, eval_set)
  report = {"rows": rows, "per_triple": per_triple,
            "mechanisms": mechanisms.mechanism_measures(codes, eval_set)}
  if generated:
    report["generated"] = frames
  return report


def evaluate_all(checkpoint: PathLike, eval_set_path: PathLike, batch_size: int = 32,
                 step: int | None = None, ema: bool = True,
                 sets: Sequence[str] | None = None) -> dict:
  """Every set beside `eval_set_path` (`eval_sets.set_paths`), scored:
  {set: {'model': row, baseline: row, ...}, 'mechanisms': {set: ...}, 'per_triple': {set: ...},
  'generated': {set: frames}}."""
  from pcavs_jax.checkpoint import load_checkpoint
  from pcavs_jax.data.synthtalk import eval_sets
  model, variables = load_checkpoint(str(checkpoint), step=step, ema=ema)
  report = {"mechanisms": {}, "per_triple": {}, "generated": {}}
  for name, path in eval_sets.set_paths(eval_set_path).items():
    if sets and name not in sets:
      continue
    one = evaluate_set(model, variables, path, batch_size=batch_size, generated=True)
    report[name] = one["rows"]
    for key in ("mechanisms", "per_triple", "generated"):
      report[key][name] = one[key]
  return report


def evaluate_checkpoint(checkpoint: PathLike, eval_set_path: PathLike, batch_size: int = 32,
                        step: int | None = None, ema: bool = True) -> dict:
  """One set's generation scores: {'model', 'baselines', 'per_triple', 'generated',
  'mechanisms'} (`evaluate_all` scores every set of the folder).

  Args:
    checkpoint: training workdir or exported checkpoint.
    eval_set_path: a SynthTalk set, e.g. `cross_driven/eval_set.npz`.
    batch_size: frames per device per network call.
    step: a training workdir's step (default: its latest).
    ema: a training workdir's moving-average parameters when it kept them (else the trained
      parameters).
  """
  from pcavs_jax.checkpoint import load_checkpoint
  model, variables = load_checkpoint(str(checkpoint), step=step, ema=ema)
  one = evaluate_set(model, variables, eval_set_path, batch_size=batch_size, generated=True)
  rows = one.pop("rows")
  return {"model": rows.pop("model"), "baselines": rows, **one}


def evaluate_steps(workdir: PathLike, eval_set_path: PathLike, batch_size: int = 32,
                   ema: bool = True, sets: Sequence[str] | None = None,
                   curve_path: PathLike | None = None) -> list[dict]:
  """Scores every checkpoint kept in a training workdir on every set: the learning curves,
  one row per (step, set) with the model's generation scores and the mechanisms. With
  `curve_path` the rows also go there as JSON lines, each appended as its step is scored
  (the file starts empty)."""
  from pcavs_jax.checkpoint import checkpoint_steps
  if curve_path is not None:
    files.write_atomic(curve_path, "")
  rows = []
  for step in checkpoint_steps(str(workdir)):
    report = evaluate_all(workdir, eval_set_path, batch_size, step=step, ema=ema, sets=sets)
    for name, mech in report["mechanisms"].items():
      rows.append({"step": step, "set": name, **report[name]["model"], **mech})
      if curve_path is not None:
        files.append_jsonl(curve_path, rows[-1])
  return rows


def write_videos(generated: dict[str, np.ndarray], eval_set_path: PathLike,
                 out_dir: PathLike) -> None:
  """One mp4 per triple with C's audio: the generate command's panel, the truth as last column."""
  from pcavs_jax.data.media import write_video
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.infer.datasets import eval_set_jobs
  from pcavs_jax.infer.writers import panel_frame
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  for job in eval_set_jobs(eval_sets.load_eval_set(eval_set_path)):
    frames = generated[job.name]
    write_video(out / f"{job.name}.mp4", (panel_frame(job, f, t) for t, f in enumerate(frames)),
                audio=job.wav)


def write_report(report: dict, path: PathLike, eval_set_path: PathLike,
                 videos: PathLike | None = None) -> dict:
  """Writes `evaluate_all`'s report as JSON (without the frames; NaN as null), atomically, with
  each set's videos in videos/<set>/ when asked; returns what was written."""
  from pcavs_jax.data.synthtalk import eval_sets
  generated = report.pop("generated")
  files.write_json(path, report)
  if videos:
    for name, set_path in eval_sets.set_paths(eval_set_path).items():
      if name in generated:
        write_videos(generated[name], set_path, pathlib.Path(videos) / name)
  return report
