"""Writing a SynthTalk folder: the train and test splits and the cross-driven sets.

  OUT/manifest.json, OUT/train/*.tfrecord, OUT/test/*.tfrecord   the clips (pcavs_jax.data.records)
  OUT/cross_driven/eval_set.npz (+ .json), baselines.json        unseen: test identities' triples
  OUT/cross_driven/seen_set.npz (+ .json), seen_baselines.json   seen: triples of held-out clips
                                                                 of training identities
  OUT/cross_driven/self_set.npz, self_baselines.json             with self_driven: the training
                                                                 clips driven by themselves
  OUT/synthtalk.json                                             the settings and the split
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from data_pipeline.synthtalk import generate
from pcavs_jax.data import files

BASELINE_KEYS = ("ssim", "psnr", "mouth_err", "pose_err", "identity_err", "sync", "abs_lag")


@dataclasses.dataclass(frozen=True)
class SynthTalkSettings:
  """What `write_synthtalk` builds (the `pcavs-jax synthtalk` flags)."""
  identities: int = 40
  clips_per_identity: int = 4
  resolution: int = 64
  seed: int = 0
  frames: int = 50                 # frames per clip (25 fps)
  test_fraction: float = 0.2       # identities held out as the test split
  triples: int | None = None       # unseen triples (default: test identities x min(clips, 2))
  heldout_clips: int = 1           # clips per training identity training never reads (seen set)
  seen_triples: int | None = None  # seen triples (default: as many as unseen, else <= 24)
  self_driven: bool = False        # also the self-driven set of every training clip
  pose_twins: bool = False         # training clips also drawn on another training identity
  workers: int = 1                 # processes to render clips and score baselines with
  num_shards: int | None = None    # TFRecord shards per split
  jpeg_quality: int = 95
  baselines: bool = True           # score the baselines of every set

  def check(self) -> None:
    """Raises ValueError naming the setting that cannot be built."""
    if self.identities < 1 or self.clips_per_identity < 1 or self.frames < 1:
      raise ValueError("--identities, --clips-per-identity and --frames must be >= 1")
    if self.resolution < 32:
      raise ValueError("--resolution must be >= 32 pixels")
    if not 0.0 <= self.test_fraction < 1.0:
      raise ValueError("--test-fraction must be in [0, 1)")


def _keep(clips, into: list):
  for clip in clips:
    into.append(clip)
    yield clip


def _write_splits(out: Path, s: SynthTalkSettings, split, log) -> tuple[dict, dict]:
  """Writes the train and test records; the clips the sets need, and the seconds per split."""
  from pcavs_jax.data import records
  kept: dict[str, list] = {"train": [], "test": []}
  timings = {}
  for name, ids in (("train", split.train), ("test", split.test)):
    if not ids:
      continue
    start = time.time()
    clips = generate.generate_clips(s.seed, ids, s.clips_per_identity, s.frames, s.resolution,
                                    s.workers, pose_twins=s.pose_twins and name == "train")
    if name == "test" or s.self_driven:
      clips = _keep(clips, kept[name])
    entry = records.write_clips(clips, out, name, num_shards=s.num_shards,
                                jpeg_quality=s.jpeg_quality)
    timings[name] = took = time.time() - start
    log(f"synthtalk: {name}: {entry['clips']} clips of {len(ids)} identities in {took:.1f} s "
        f"({entry['clips'] / max(took, 1e-9):.2f} clips/s)")
  return kept, timings


def _seen_identities(s: SynthTalkSettings, split) -> tuple[int, ...]:
  """The training identities whose held-out clips make the seen set (the first n)."""
  if s.seen_triples is not None:
    n = s.seen_triples
  elif split.test:
    n = s.triples or len(split.test) * min(s.clips_per_identity, 2)
  else:
    n = 24
  return split.train[:max(min(n, len(split.train)), 0)]


def _set_builders(s: SynthTalkSettings, split, kept: dict, log) -> dict[str, Callable]:
  """name -> a function building that evaluation set."""
  from pcavs_jax.data.synthtalk import eval_sets
  sets = {}
  if kept["test"]:
    sets["unseen"] = lambda: eval_sets.build_eval_set(kept["test"], s.triples)
  else:
    log("synthtalk: no test identities, so no unseen cross-driven set")
  seen_ids = _seen_identities(s, split)
  if seen_ids and s.heldout_clips > 0:
    heldout = lambda: list(generate.generate_clips(
        s.seed, seen_ids, s.heldout_clips, s.frames, s.resolution, s.workers,
        first_clip=s.clips_per_identity))
    n = len(seen_ids) if s.seen_triples is None else s.seen_triples
    sets["seen"] = lambda: eval_sets.build_eval_set(heldout(), n, seen=True)
  if s.self_driven and kept["train"]:
    sets["self"] = lambda: eval_sets.build_self_driven_set(kept["train"])
  return sets


def _write_baselines(eval_set, set_path: Path, name: str, log, workers: int) -> None:
  """Scores the baselines of one set beside it, and logs them."""
  from pcavs_jax.data.synthtalk import eval_sets
  from pcavs_jax.evaluate import scoring
  scores = scoring.baseline_scores(eval_set, workers=workers)
  # NaN stays NaN (Python's json reads it back): the readers of baselines average over them.
  files.write_atomic(eval_sets.baselines_path(set_path), json.dumps(scores, indent=1))
  log(f"synthtalk: {name} baselines " + " ".join(f"{k:>12s}" for k in BASELINE_KEYS))
  for baseline, row in scores.items():
    log(f"  {baseline:16s}" + " ".join(f"{row[k]:12.3f}" for k in BASELINE_KEYS))


def write_synthtalk(out: str | Path, settings: SynthTalkSettings = SynthTalkSettings(), *,
                    log: Callable[[str], None] | None = None) -> dict:
  """Builds the splits, the evaluation sets and their baseline scores into `out`.

  Args:
    out: the SynthTalk folder (see the module doc).
    settings: sizes, seed and options.
    log: progress lines (None: quiet).

  Returns:
    the summary also written to OUT/synthtalk.json: the settings, the identities of each split,
    seconds per split and triples per set.

  Raises:
    ValueError: for settings that cannot be built.
  """
  from pcavs_jax.data.synthtalk import eval_sets
  settings.check()
  log = log or (lambda _: None)
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  split = generate.split_identities(settings.identities, settings.test_fraction)
  kept, timings = _write_splits(out, settings, split, log)
  summary = {k: getattr(settings, k) for k in ("seed", "identities", "clips_per_identity",
                                               "frames", "resolution", "test_fraction",
                                               "heldout_clips")}
  summary.update(train_identities=[generate.identity_name(i) for i in split.train],
                 test_identities=[generate.identity_name(i) for i in split.test],
                 seconds=timings, triples={})
  for name, build in _set_builders(settings, split, kept, log).items():
    start = time.time()
    eval_set = build()
    set_file, _ = eval_sets.SET_FILES[name]
    path = eval_sets.save_eval_set(eval_set, out / "cross_driven" / set_file)
    summary["triples"][name] = len(eval_set)
    log(f"synthtalk: {name} set: {len(eval_set)} triples ({time.time() - start:.1f} s)")
    if settings.baselines:
      _write_baselines(eval_set, path, name, log, settings.workers)
  files.write_json(out / "synthtalk.json", summary)
  return summary
