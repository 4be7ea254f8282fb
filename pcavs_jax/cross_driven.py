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



def generate_cross_driven(model, variables, eval_set, batch_size: int = 16) -> dict[str, np.ndarray]:
  """Drives every triple of `eval_set` in memory: {triple_id: (T, H, W, 3) uint8}."""
  from pcavs_jax.inference import FrameDriver, eval_set_jobs
  driver = FrameDriver(model, variables, batch_size)
  if eval_set.resolution != driver.resolution:
    raise ValueError(f"eval set frames are {eval_set.resolution} px, the model draws "
                     f"{driver.resolution} px")
  return {job.name: driver.drive_job(job) for job in eval_set_jobs(eval_set)}


def evaluate_checkpoint(checkpoint: str, eval_set_path: str, batch_size: int = 32,
                        step: int | None = None, ema: bool = True) -> dict:
  """Scores a checkpoint's cross-driven generation (`scoring.score` summary + baselines).

  Args:
    checkpoint: training workdir or exported checkpoint.
    eval_set_path: SynthTalk's `cross_driven/eval_set.npz`.
    batch_size: frames per device per network call.
    step: a training workdir's step (default: its latest).
    ema: a training workdir's moving-average parameters when it kept them (else the trained
      parameters).
  """
  from data_pipeline.synthtalk import crossdriven, scoring
  from pcavs_jax.checkpoint import load_checkpoint

  model, variables = load_checkpoint(checkpoint, step=step, ema=ema)
  eval_set = crossdriven.load_eval_set(eval_set_path)
  generated = generate_cross_driven(model, variables, eval_set, batch_size)
  result = scoring.score(generated, eval_set)
  baselines_file = pathlib.Path(eval_set_path).parent / "baselines.json"
  baselines = json.loads(baselines_file.read_text()) if baselines_file.exists() else \
      scoring.baseline_scores(eval_set)
  return {"model": {k: v for k, v in result.items() if k != "per_triple"},
          "per_triple": result["per_triple"], "baselines": baselines, "generated": generated}


def target_ratios(model: dict, baselines: dict) -> dict[str, float]:
  """The ratios the targets are judged by: mouth error / static-mouth baseline's, pose error /
  reference-pose baseline's."""
  return {"mouth_ratio": model["mouth_err"] / baselines["static_mouth"]["mouth_err"],
          "pose_ratio": model["pose_err"] / baselines["reference_pose"]["pose_err"]}


def evaluate_steps(workdir: str, eval_set_path: str, batch_size: int = 32,
                   ema: bool = True) -> list[dict]:
  """Scores every checkpoint kept in a training workdir: the learning curve on the eval set."""
  from pcavs_jax.checkpoint import checkpoint_steps
  rows = []
  for step in checkpoint_steps(workdir):
    report = evaluate_checkpoint(workdir, eval_set_path, batch_size, step=step, ema=ema)
    rows.append({"step": step, **report["model"], **target_ratios(report["model"], report["baselines"])})
  return rows


def curve_table(rows: list[dict]) -> str:
  keys = ("ssim", "psnr", "mouth_ratio", "pose_ratio", "identity_err", "lag")
  lines = [f"{'step':>8s}" + "".join(f"{k:>13s}" for k in keys)]
  lines += [f"{r['step']:8d}" + "".join(f"{r[k]:13.3f}" for k in keys) for r in rows]
  return "\n".join(lines)


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
    ratios = target_ratios(m, b)
    lines.append(f"mouth error / static-mouth baseline: {ratios['mouth_ratio']:.1%}; "
                 f"pose error / reference-pose baseline: {ratios['pose_ratio']:.1%}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- code probes

POSE_KEYS = ("yaw", "pitch", "roll", "tx", "ty")


def heldout_r2(features: np.ndarray, targets: np.ndarray, train: np.ndarray,
               ridge: float = 1e-3) -> np.ndarray:
  """R^2 on the held-out rows of a ridge-regularised linear fit of targets from features.

  Args:
    features: (N, F); targets: (N, K); train: (N,) bool, the rows the fit sees.

  Returns:
    (K,) R^2 over the rows not in `train`: 1 for an exact linear code, <= 0 when the features
    tell nothing linear about the target.
  """
  x = np.asarray(features, np.float64)
  mean, std = x[train].mean(0), x[train].std(0) + 1e-8
  x = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
  y = np.asarray(targets, np.float64)
  a = x[train]
  w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ y[train])
  test = ~train
  resid = ((x[test] @ w - y[test]) ** 2).sum(0)
  total = ((y[test] - y[test].mean(0)) ** 2).sum(0)
  return 1.0 - resid / np.maximum(total, 1e-12)


def probe_codes(model, variables, eval_set, batch_size: int = 32) -> dict[str, dict[str, float]]:
  """What E_n's codes carry and what G's pose follows, on SynthTalk's held-out identities.

  - `pose_code_r2` / `mouth_feature_r2`: held-out R^2 of a linear read-out of each truth quantity
    (pose keys, mouth_open) from the pose code / the visual mouth feature of the truth frames,
    fitted on the first two thirds of the triples and scored on the rest (other identities).
  - `follows_pose_source` / `follows_reference`: correlation over frames between the generated
    frames' measured yaw, pitch, roll and the pose source's truth (reference fixed), and the
    reference's truth (reference varying, pose source fixed); mean over triples.
  """
  import jax
  import jax.numpy as jnp
  from data_pipeline.synthtalk import analyzer, scoring
  from pcavs_jax import audio as audio_lib

  encode = jax.jit(lambda v, x: model.apply(v, x, method=model.encode_nonidentity))
  drive = jax.jit(lambda v, r, m, p: model.apply(v, r, m, p, method=model.infer)["driven"])
  to_model = lambda frames: jnp.asarray(frames, jnp.float32) / 127.5 - 1.0
  keys = POSE_KEYS + ("mouth_open",)
  pose_codes, mouths, truths, groups = [], [], [], []
  follows = {"follows_pose_source": [], "follows_reference": []}
  for i, tr in enumerate(eval_set.triples):
    t = tr.num_frames
    for start in range(0, t, batch_size):
      out = encode(variables, to_model(tr.truth_frames[start:start + batch_size]))
      pose_codes.append(np.asarray(out["pose_code"]))
      mouths.append(np.asarray(out["mouth"]))
    truths.append(np.stack([tr.truth[k] for k in keys], axis=1))
    groups.append(np.full(t, i))
    mel = jnp.asarray(audio_lib.mel_windows(tr.mel, 1))
    first = lambda frames: np.repeat(frames[:1], t, axis=0)
    for name, refs, poses, truth in (
        ("follows_pose_source", first(tr.reference_frames), tr.pose_frames[:t], tr.truth),
        ("follows_reference", tr.reference_frames[:t], first(tr.pose_frames), tr.reference_truth)):
      frames = np.concatenate([
          np.asarray(drive(variables, to_model(refs[s:s + batch_size]),
                           jnp.repeat(mel, len(refs[s:s + batch_size]), axis=0),
                           to_model(poses[s:s + batch_size])))
          for s in range(0, t, batch_size)])
      measured = analyzer.analyze_frames(
          scoring.to_uint8(frames, eval_set.resolution, value_range=(-1.0, 1.0)))
      # The lag-0 correlation of the scoring's cross-correlation (NaN frames take the mean).
      follows[name].append([scoring.lagged_correlation(measured[k], truth[k][:t], 0)[2]
                            for k in ("yaw", "pitch", "roll")])
  groups = np.concatenate(groups)
  train = groups < (2 * len(eval_set.triples)) // 3
  truths = np.concatenate(truths)
  report = {}
  for name, feats in (("pose_code_r2", pose_codes), ("mouth_feature_r2", mouths)):
    report[name] = dict(zip(keys, heldout_r2(np.concatenate(feats), truths, train).tolist()))
  for name, rows in follows.items():
    report[name] = dict(zip(("yaw", "pitch", "roll"), np.mean(np.asarray(rows), 0).tolist()))
  return report


def write_videos(generated: dict[str, np.ndarray], eval_set_path: str, out_dir: str) -> None:
  """One mp4 per triple with C's audio: the generate command's panel, the truth as last column."""
  from data_pipeline.synthtalk import crossdriven
  from pcavs_jax.inference import eval_set_jobs, panel_frame
  from pcavs_jax.media import write_video
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  for job in eval_set_jobs(crossdriven.load_eval_set(eval_set_path)):
    frames = generated[job.name]
    write_video(out / f"{job.name}.mp4", (panel_frame(job, f, t) for t, f in enumerate(frames)),
                audio=job.wav)


def register(subparsers) -> None:
  p = subparsers.add_parser("evaluate-synthtalk", help="cross-driven generation + exact SynthTalk scores",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="training workdir or exported checkpoint")
  p.add_argument("--eval-set", required=True, help="SynthTalk OUT/cross_driven/eval_set.npz")
  p.add_argument("--report", default=None, help="JSON report path (default: beside the checkpoint)")
  p.add_argument("--videos", default=None, help="also write each triple as mp4 (with C's audio) here")
  p.add_argument("--all-steps", action="store_true",
                 help="score every checkpoint kept in the workdir (the learning curve); the "
                      "rows go to <workdir>/synthtalk_curve.jsonl (_raw with --no-ema)")
  p.add_argument("--no-ema", dest="ema", action="store_false",
                 help="score a training workdir's trained parameters, not their moving average")
  p.set_defaults(func=run)


def _report_path(args: argparse.Namespace, stem: str, suffix: str) -> pathlib.Path:
  """--report, else <checkpoint>/<stem>[_raw]<suffix> (_raw: the parameters without average)."""
  if args.report:
    return pathlib.Path(args.report)
  return pathlib.Path(args.checkpoint) / f"{stem}{'' if args.ema else '_raw'}{suffix}"


def run(args: argparse.Namespace) -> int:
  if args.all_steps:
    rows = evaluate_steps(args.checkpoint, args.eval_set, ema=args.ema)
    print(curve_table(rows))
    path = _report_path(args, "synthtalk_curve", ".jsonl")
    path.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
    print(f"curve: {path}")
    return 0
  report = evaluate_checkpoint(args.checkpoint, args.eval_set, ema=args.ema)
  print(summary_table(report))
  generated = report.pop("generated")
  path = _report_path(args, "synthtalk_eval", ".json")
  path.write_text(json.dumps(report, indent=1, default=float))
  print(f"report: {path}")
  if args.videos:
    write_videos(generated, args.eval_set, args.videos)
  return 0
