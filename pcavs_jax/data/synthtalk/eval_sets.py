"""The cross-driven evaluation sets: identity from clip A, pose from clip B, audio from clip C.

Because SynthTalk can draw any (identity, pose, mouth), every triple has an exact ground-truth
video: A's identity, B's per-frame pose and the mouth that C's audio implies. Triples are built
deterministically (`build_eval_set`) from
- the test split: identities never seen in training (`unseen`, `eval_set.npz`);
- held-out clips of training identities, clips the training never reads (`seen`,
  `seen_set.npz`; A carries its training label, for E_i's identity read-out);
and `build_self_driven_set` makes the self-driven set of training clips (`self`,
`self_set.npz`: A = B = C, the memorisation check). `set_paths` finds the sets of a folder.

Each triple also carries what the baselines need (`scoring.baseline_frames`): A's own truth
(its static mouth and own pose at the reference frame), the mouth of a fourth clip D (audio
from another clip) and the parameters of another test identity.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pcavs_jax.data import files
from pcavs_jax.data.clips import MEL_HOPS_PER_FRAME, SAMPLES_PER_FRAME, Clip
from pcavs_jax.data.synthtalk import analyzer, render

MOUTH_KEYS = render.MOUTH_KEYS + ("phoneme",)


@dataclasses.dataclass
class CrossTriple:
  """One cross-driven case and its truth.

  Attributes:
    triple_id: e.g. 'x000'.
    reference_clip, pose_clip, audio_clip: clip ids of A, B, C.
    identity_params: A's identity parameters.
    reference_frames: A's frames (T_A, H, W, 3); the reference image is frame 0 unless a model
      takes more.
    pose_frames: B's frames, the pose source (T, H, W, 3).
    audio, mel: C's waveform (16 kHz) and mel (DESIGN.md §4), cut to T frames.
    truth: per-frame truth of the result: pose keys from B, mouth keys and phoneme from C.
    truth_frames: the exact result (T, H, W, 3) uint8.
    readout: `analyzer.analyze_frames(truth_frames)`, what generated frames are compared with.
    reference_truth: A's own per-frame truth (for the static-mouth and own-pose baselines).
    other_mouth: mouth truth of a clip D != C (the other-audio baseline).
    other_identity_params: parameters of a test identity != A (the wrong-identity baseline).
    reference_label: A's identity class in training (-1: an identity training never saw).
  """
  triple_id: str
  reference_clip: str
  pose_clip: str
  audio_clip: str
  identity_params: dict[str, np.ndarray]
  reference_frames: np.ndarray
  pose_frames: np.ndarray
  audio: np.ndarray
  mel: np.ndarray
  truth: dict[str, np.ndarray]
  truth_frames: np.ndarray
  readout: dict[str, np.ndarray]
  reference_truth: dict[str, np.ndarray]
  other_mouth: dict[str, np.ndarray]
  other_identity_params: dict[str, np.ndarray]
  reference_label: int = -1

  @property
  def num_frames(self) -> int:
    return int(self.truth_frames.shape[0])


@dataclasses.dataclass
class EvalSet:
  """The cross-driven triples at one resolution."""
  resolution: int
  triples: list[CrossTriple]

  def __getitem__(self, triple_id: str) -> CrossTriple:
    for t in self.triples:
      if t.triple_id == triple_id:
        return t
    raise KeyError(triple_id)

  def __len__(self) -> int:
    return len(self.triples)


def _triple(triple_id: str, a: Clip, b: Clip, c: Clip, d: Clip, other: Clip,
            truth: dict[str, np.ndarray], resolution: int, label: int) -> CrossTriple:
  """Identity from A, pose from B, audio from C (`truth` holds B's pose and C's mouth, cut to
  the triple's length); D gives the other-audio baseline its mouth, `other` its identity."""
  t = len(next(iter(truth.values())))
  frames = render.render_frames(a.identity_params, truth, resolution)
  return CrossTriple(
      triple_id=triple_id, reference_clip=a.clip_id, pose_clip=b.clip_id,
      audio_clip=c.clip_id, identity_params=dict(a.identity_params),
      reference_frames=a.frames, pose_frames=b.frames[:t], audio=c.audio[:t * SAMPLES_PER_FRAME],
      mel=c.mel[:MEL_HOPS_PER_FRAME * t + 16], truth=truth, truth_frames=frames,
      readout=analyzer.analyze_frames(frames), reference_truth=dict(a.truth),
      other_mouth={key: d.truth[key][:t] for key in render.MOUTH_KEYS},
      other_identity_params=dict(other.identity_params), reference_label=label)


def build_eval_set(test_clips: Sequence[Clip], num_triples: int | None = None,
                   seen: bool = False) -> EvalSet:
  """Builds the triples from test-split clips (or held-out clips of training identities),
  deterministically.

  Triple k takes A from identity k mod n, B from the next identity and C from the one after
  (clip indices advancing with k // n), so pose and audio come from other identities whenever
  the split has three or more.

  Args:
    test_clips: the test split's clips (any order; sorted by clip id here).
    num_triples: how many; default n_identities * min(clips per identity, 2).
    seen: the clips' identities are training identities: each triple keeps A's label.

  Returns:
    The evaluation set, with truth frames rendered and read by the analyzer.
  """
  by_id: dict[str, list[Clip]] = {}
  for clip in sorted(test_clips, key=lambda c: c.clip_id):
    by_id.setdefault(clip.identity, []).append(clip)
  names = sorted(by_id)
  n = len(names)
  if n == 0:
    raise ValueError("no test clips: the cross-driven set needs a test split")
  per = min(len(v) for v in by_id.values())
  if num_triples is None:
    num_triples = n * min(per, 2)
  resolution = int(test_clips[0].frames.shape[1])

  def pick(k: int, shift: int) -> Clip:
    clips = by_id[names[(k + shift) % n]]
    return clips[(k // n + shift) % len(clips)]

  triples = []
  for k in range(num_triples):
    a, b, c = pick(k, 0), pick(k, 1), pick(k, 2)
    d = c   # another clip's audio: the first clip after C's turn that is not C
    for shift in range(3, 3 + n * per):
      if pick(k, shift).clip_id != c.clip_id:
        d = pick(k, shift)
        break
    other = by_id[names[(k + 1) % n]][0] if n > 1 else a
    t = min(b.num_frames, c.num_frames)
    truth = {key: b.truth[key][:t] for key in render.POSE_KEYS}
    truth.update({key: c.truth[key][:t] for key in MOUTH_KEYS if key in c.truth})
    triples.append(_triple(f"x{k:03d}", a, b, c, d, other, truth, resolution,
                           int(a.label) if seen else -1))
  return EvalSet(resolution, triples)


def build_self_driven_set(clips: Sequence[Clip]) -> EvalSet:
  """One self-driven triple per clip (A = B = C, sorted by clip id): identity from its frame 0,
  pose and audio from the clip itself, so the truth is the clip. For the memorisation check
  on training clips; each triple keeps the clip's label.

  The other-audio baseline takes the next clip's mouth, the other-identity one the next
  identity's parameters (A's own when there is one identity).
  """
  clips = sorted(clips, key=lambda c: c.clip_id)
  if not clips:
    raise ValueError("no clips for the self-driven set")
  triples = []
  for k, c in enumerate(clips):
    d = clips[(k + 1) % len(clips)]
    other = next((o for o in clips[k + 1:] + clips[:k] if o.identity != c.identity), c)
    t = min(c.num_frames, d.num_frames)
    truth = {key: c.truth[key][:t] for key in render.POSE_KEYS + MOUTH_KEYS if key in c.truth}
    triples.append(_triple(f"s{k:03d}", c, c, c, d, other, truth, int(c.frames.shape[1]),
                           int(c.label)))
  return EvalSet(int(clips[0].frames.shape[1]), triples)


# The sets a `cross_driven` folder may hold: name -> (set file, its baselines' scores).
SET_FILES = {"unseen": ("eval_set.npz", "baselines.json"),
             "seen": ("seen_set.npz", "seen_baselines.json"),
             "self": ("self_set.npz", "self_baselines.json")}


def set_paths(path: str | Path) -> dict[str, Path]:
  """The evaluation sets of a `cross_driven` folder, or of the folder of one set file:
  {name: path} for the `SET_FILES` that exist (any other file given is named by its stem)."""
  path = Path(path)
  folder = path if path.is_dir() else path.parent
  found = {name: folder / f for name, (f, _) in SET_FILES.items() if (folder / f).exists()}
  if path.is_file() and path not in found.values():
    found = {path.stem: path, **found}
  return found


def baselines_path(set_path: str | Path) -> Path:
  """Where the baselines' scores of a set file are kept (`SET_FILES`; else <stem>_baselines.json)."""
  set_path = Path(set_path)
  names = {f: b for f, b in SET_FILES.values()}
  return set_path.parent / names.get(set_path.name, f"{set_path.stem}_baselines.json")


_ARRAYS = ("reference_frames", "pose_frames", "audio", "mel", "truth_frames")
_DICTS = ("identity_params", "truth", "readout", "reference_truth", "other_mouth",
          "other_identity_params")
_IDS = ("reference_clip", "pose_clip", "audio_clip")


def save_eval_set(eval_set: EvalSet, path: str | Path) -> Path:
  """Writes the set to one .npz (arrays) with a JSON index beside it (`<path>.json`)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = {}
  index = {"resolution": eval_set.resolution, "triples": []}
  for t in eval_set.triples:
    index["triples"].append({"triple_id": t.triple_id, **{k: getattr(t, k) for k in _IDS},
                             "num_frames": t.num_frames, "reference_label": t.reference_label})
    for name in _ARRAYS:
      arrays[f"{t.triple_id}/{name}"] = getattr(t, name)
    for name in _DICTS:
      for key, value in getattr(t, name).items():
        arrays[f"{t.triple_id}/{name}/{key}"] = value
  np.savez_compressed(path, **arrays)
  files.write_json(Path(str(path) + ".json"), index)
  return path


def load_eval_set(path: str | Path) -> EvalSet:
  """Reads a set written by `save_eval_set`."""
  path = Path(path)
  index = json.loads(Path(str(path) + ".json").read_text())
  with np.load(path) as data:
    stored = {k: data[k] for k in data.files}
  triples = []
  for entry in index["triples"]:
    tid = entry["triple_id"]
    fields = {k: entry[k] for k in _IDS}
    fields["reference_label"] = int(entry.get("reference_label", -1))
    fields.update({name: stored[f"{tid}/{name}"] for name in _ARRAYS})
    for name in _DICTS:
      prefix = f"{tid}/{name}/"
      fields[name] = {k[len(prefix):]: v for k, v in stored.items() if k.startswith(prefix)}
    triples.append(CrossTriple(triple_id=tid, **fields))
  return EvalSet(int(index["resolution"]), triples)
