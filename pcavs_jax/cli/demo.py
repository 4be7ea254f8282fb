"""The README's main job: SynthTalk data, a short training run, cross-driven videos, evaluation.

  pcavs-jax demo [--out DIR] [--train-minutes M] [--identities N]   (what scripts/demo.sh runs)

Every step is a library call the subcommands also make. Training shows a progress bar (step,
stage, losses, time left) and the mechanism measures as they are logged; the printed tables are
the SynthTalk evaluation (identity from clip A, pose from clip B, audio from clip C, exact ground
truth) of identities seen in training (held-out clips) and of unseen ones, each next to its
baselines, and the measure of each mechanism (sync, pose code, identity).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import time

PROGRESS_LOSSES = (("g_loss", "G"), ("d_loss", "D"), ("sync_contrastive_av", "sync"),
                   ("identity_ce", "id"))
PROBE_KEYS = ("sync_top1", "sync_lag", "pose_code_r2", "identity_top1", "ssim", "pose_ratio",
              "mouth_ratio")


def register(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser("demo", help="the README's main job: data, training, videos, tables",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default="demo_out", help="output folder (data, run, videos, report)")
  p.add_argument("--train-minutes", type=float,
                 default=float(os.environ.get("DEMO_TRAIN_MINUTES", 8)))
  p.add_argument("--identities", type=int, default=48)
  p.add_argument("--clips-per-identity", type=int, default=4)
  p.add_argument("--frames", type=int, default=50)
  p.add_argument("--triples", type=int, default=8, help="triples of the seen and unseen sets each")
  p.add_argument("--config", default="configs/synthtalk.py",
                 help="training config (relative to the repository root)")
  p.add_argument("--config-args",
                 default="identity_steps=300,sync_steps=300,aux_losses=1,visual_fake=0",
                 help="the config's arguments besides minutes (short identity and sync stages, "
                      "so the full stage gets most of the budget; the auxiliary losses; only "
                      "the audio-driven fake drawn, for more steps per minute)")
  p.add_argument("--probe-every", type=int, default=0,
                 help="steps between mechanism probes during training, printed above the bar "
                      "(0: measured once, after training; each probe costs 5-45 s of the budget)")
  p.add_argument("--eval-triples", type=int, default=4,
                 help="triples per set the training probe generates at each probe")
  p.add_argument("--seed", type=int, default=0)
  p.set_defaults(func=run)
  return p


class TrainingProgress:
  """A tqdm bar over the training's wall-time budget: step, stage and losses as they are
  logged; each mechanism probe is printed above the bar."""

  def __init__(self, config):
    from tqdm import tqdm
    from pcavs_jax.train.stages import stage_at, stage_schedule
    self._schedule, self._stage_at = stage_schedule(config), stage_at
    self._started = False
    self.bar = tqdm(total=round(60 * config.max_train_minutes), unit="s", desc="training",
                    bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {elapsed}<{remaining} {postfix}")

  def __call__(self, step: int, scalars: dict[str, float]) -> None:
    if not self._started and "steps_per_sec" in scalars:
      # The budget runs from the loop's first step (after set-up): the first logged window
      # began step / rate seconds ago.
      self.bar.start_t = time.time() - step / max(scalars["steps_per_sec"], 1e-9)
      self._started = True
    self.bar.n = min(round(time.time() - self.bar.start_t), self.bar.total)
    if "g_loss" in scalars or "d_loss" in scalars or "identity_ce" in scalars:
      post = {"step": step, "stage": self._stage_at(self._schedule, step)}
      post.update({short: f"{scalars[k]:.3g}" for k, short in PROGRESS_LOSSES if k in scalars})
      post["steps/s"] = f"{scalars.get('steps_per_sec', 0):.1f}"
      self.bar.set_postfix(post, refresh=False)
    else:
      self.bar.write(f"  step {step} measures: " + ", ".join(
          f"{k} {v:.3g}" for k, v in scalars.items()
          if k.split("/")[-1] in PROBE_KEYS and v == v))
    self.bar.refresh()

  def close(self) -> None:
    self.bar.close()


def _synthtalk(args: argparse.Namespace, data: pathlib.Path) -> None:
  from data_pipeline.synthtalk.write import SynthTalkSettings, write_synthtalk
  if (data / "cross_driven" / "seen_set.npz").exists():
    print(f"[1/4] SynthTalk: reusing {data}")
    return
  print(f"[1/4] SynthTalk: {args.identities} identities x {args.clips_per_identity} clips at "
        f"64 px, {args.triples} seen and {args.triples} unseen triples", flush=True)
  write_synthtalk(data, SynthTalkSettings(
      identities=args.identities, clips_per_identity=args.clips_per_identity, resolution=64,
      frames=args.frames, seed=args.seed, triples=args.triples, seen_triples=args.triples,
      workers=os.cpu_count() or 1),
      log=print)


def _train(args: argparse.Namespace, data: pathlib.Path, workdir: pathlib.Path) -> None:
  from pcavs_jax.evaluate.probe import training_probe
  from pcavs_jax.train import trainer
  from pcavs_jax.train.config import load_config_file
  root = pathlib.Path(__file__).resolve().parents[2]
  config = load_config_file(f"{root / args.config}:" + ",".join(
      filter(None, [f"minutes={args.train_minutes}", args.config_args])))
  config.data_dir = str(data)
  config.image_every = 0
  # By default no probe or checkpoint before the end: in the demo's minutes each one (E_i's
  # statistics re-estimated, the sets scored, the input re-seeded) cost 5-45 s of training, about
  # 300 of its 2000 steps at 9 minutes; the mechanisms are measured once, after training.
  config.eval_every = args.probe_every
  config.checkpoint_every = config.num_train_steps
  config.eval_triples = args.eval_triples
  print(f"[2/4] training {args.config} for {args.train_minutes:g} minutes -> {workdir} "
        f"(stages {config.train.schedule or config.train.stage})", flush=True)
  progress = TrainingProgress(config)
  try:
    trainer.train_and_evaluate(config, str(workdir), probe_factory=training_probe,
                               on_log=progress)
  finally:
    progress.close()


def run(args: argparse.Namespace) -> int:
  out = pathlib.Path(args.out).absolute()
  out.mkdir(parents=True, exist_ok=True)
  data, workdir, videos = out / "synthtalk", out / "run", out / "videos"
  t0 = time.time()
  _synthtalk(args, data)
  _train(args, data, workdir)

  print(f"[3/4] cross-driven generation, seen and unseen identities -> {videos}", flush=True)
  from pcavs_jax.evaluate import cross_driven
  from pcavs_jax.evaluate.report import summary_table
  eval_set = data / "cross_driven" / "eval_set.npz"
  report = cross_driven.evaluate_all(str(workdir), str(eval_set))
  report_path = out / "evaluation.json"
  cross_driven.write_report(report, report_path, str(eval_set), str(videos))

  print("[4/4] evaluation (SynthTalk exact measures; lower errors and ratios are better)")
  from pcavs_jax.infer.writers import PANEL_COLUMNS
  # The cross-driven videos' mouth source is the truth clip (C's audio drove its mouth).
  panel = " | ".join(PANEL_COLUMNS[:-1] + ("truth",))
  print(summary_table(report))
  print(f"\nfiles:\n  data      {data}\n  run       {workdir} (TensorBoard summaries, checkpoints, "
        f"mechanisms.jsonl)"
        f"\n  videos    {videos}/<seen|unseen> ({panel}, with C's audio)"
        f"\n  report    {report_path}\n  total     {(time.time() - t0) / 60:.1f} min")
  return 0
