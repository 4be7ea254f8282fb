"""Cross-driven generation on SynthTalk's evaluation set, scored against its exact truth.

For each triple: identity from clip A's first frame, head pose from clip B's frames, mouth from
clip C's audio (its mel windows, scaled by the model's audio mouth weight as at inference).

  pcavs-jax evaluate-synthtalk --checkpoint WORKDIR_OR_CKPT --eval-set DIR/cross_driven/eval_set.npz
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from pcavs_jax.audio import mel_windows


def generate_cross_driven(model, variables, eval_set, batch_size: int = 16) -> dict[str, np.ndarray]:
  """Drives every triple of `eval_set` in memory: {triple_id: (T, H, W, 3) uint8}."""
  from pcavs_jax.inference import FrameDriver
  driver = FrameDriver(model, variables, batch_size)
  if eval_set.resolution != driver.resolution:
    raise ValueError(f"eval set frames are {eval_set.resolution} px, the model draws "
                     f"{driver.resolution} px")
  n = driver.batch_size
  out = {}
  for triple in eval_set.triples:
    id_vector, id_map = driver.encode_identity(triple.reference_frames[:1])
    t = triple.num_frames
    windows = mel_windows(triple.mel, t).astype(np.float32)
    pose = triple.pose_frames[:t]
    frames = []
    for start in range(0, t, n):
      idx = np.minimum(np.arange(start, start + n), t - 1)  # pad the last batch: one compile
      y = driver.drive(np.repeat(id_vector[None], n, 0), np.repeat(id_map[None], n, 0),
                       windows[idx], pose[idx])
      frames.append(np.asarray(y)[:min(n, t - start)])
    out[triple.triple_id] = np.concatenate(frames)
  return out


def evaluate_checkpoint(checkpoint: str, eval_set_path: str, batch_size: int = 32) -> dict:
  """Scores a checkpoint's cross-driven generation (`scoring.score` summary + baselines)."""
  from data_pipeline.synthtalk import crossdriven, scoring
  from pcavs_jax.checkpoint import load_checkpoint

  model, variables = load_checkpoint(checkpoint)
  eval_set = crossdriven.load_eval_set(eval_set_path)
  generated = generate_cross_driven(model, variables, eval_set, batch_size)
  result = scoring.score(generated, eval_set)
  baselines_file = pathlib.Path(eval_set_path).parent / "baselines.json"
  baselines = json.loads(baselines_file.read_text()) if baselines_file.exists() else \
      scoring.baseline_scores(eval_set)
  return {"model": {k: v for k, v in result.items() if k != "per_triple"},
          "per_triple": result["per_triple"], "baselines": baselines, "generated": generated}


def summary_table(report: dict) -> str:
  """The model's scores beside the baselines, and the ratios the targets are judged by."""
  keys = ("ssim", "psnr", "mouth_err", "pose_err", "identity_err", "lag", "sync")
  rows = [("model", report["model"])] + [(k, v) for k, v in report["baselines"].items()
                                         if isinstance(v, dict)]
  lines = [f"{'':16s}" + "".join(f"{k:>13s}" for k in keys)]
  for name, r in rows:
    lines.append(f"{name:16s}" + "".join(f"{r.get(k, float('nan')):13.3f}" for k in keys))
  m, b = report["model"], report["baselines"]
  if "static_mouth" in b and "reference_pose" in b:
    lines.append(f"mouth error / static-mouth baseline: {m['mouth_err'] / b['static_mouth']['mouth_err']:.1%}; "
                 f"pose error / reference-pose baseline: {m['pose_err'] / b['reference_pose']['pose_err']:.1%}")
  return "\n".join(lines)


def write_videos(generated: dict[str, np.ndarray], eval_set_path: str, out_dir: str) -> None:
  """One mp4 per triple: reference | pose source | generated | truth, with C's audio."""
  from data_pipeline.synthtalk import crossdriven
  from pcavs_jax.media import write_video
  eval_set = crossdriven.load_eval_set(eval_set_path)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  for triple in eval_set.triples:
    frames = generated[triple.triple_id]
    t = len(frames)
    side = np.concatenate([np.repeat(triple.reference_frames[:1], t, 0), triple.pose_frames[:t],
                           frames, triple.truth_frames[:t]], axis=2)
    write_video(out / f"{triple.triple_id}.mp4", side, audio=triple.audio)


def register(subparsers) -> None:
  p = subparsers.add_parser("evaluate-synthtalk", help="cross-driven generation + exact SynthTalk scores",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="training workdir or exported checkpoint")
  p.add_argument("--eval-set", required=True, help="SynthTalk OUT/cross_driven/eval_set.npz")
  p.add_argument("--report", default=None, help="JSON report path (default: beside the checkpoint)")
  p.add_argument("--videos", default=None, help="also write each triple as mp4 (with C's audio) here")
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  report = evaluate_checkpoint(args.checkpoint, args.eval_set)
  print(summary_table(report))
  generated = report.pop("generated")
  path = pathlib.Path(args.report or pathlib.Path(args.checkpoint) / "synthtalk_eval.json")
  path.write_text(json.dumps(report, indent=1, default=float))
  print(f"report: {path}")
  if args.videos:
    write_videos(generated, args.eval_set, args.videos)
  return 0
