"""Generated talking faces scored against their ground truth: SSIM, PSNR, CPBD, LMD, CSIM and
head-pose error (the per-frame measures are in `metrics`).

GEN and TRUTH are each a video, a folder of frames, or a folder of those (matched by relative
name: `generate --manifest` or `--records` outputs against truth videos); TRUTH may also be a
clip-record folder (`--split`, matched by clip id, e.g. against `generate --records`). REFERENCE
(the identity photo) and POSE (the pose source) are one file used for every video, or a folder
holding one per video under the same name.

Measures (generated frames are resized to the truth's size; the first min(T_gen, T_truth) frames
are compared; the JSON report keeps every per-frame value):
- ssim, psnr: `metrics.ssim`, `metrics.psnr` (means over frames; PSNR in dB, capped at 100).
- cpbd: the no-reference sharpness of Narvekar & Karam (IEEE TIP 2011), cumulative probability
  of blur detection, of the generated frames (`cpbd_truth`: of the truth frames); higher is
  sharper.
- lmd: mouth landmark distance, the mean distance in pixels between the 20 mouth landmarks
  (48-67 of dlib's 68 points) of generated and truth frames, each video in its own official
  224 x 224 alignment (`pcavs_jax.data.face`), as the paper reports it. Lower is better.
- csim: identity similarity, the cosine similarity of dlib's 128-d face descriptors of the
  reference photo and each generated frame (without --reference: truth frame t against generated
  frame t). Higher is better; two photos of one person score about 0.95, of two people 0.8.
- pose_err_yaw, pose_err_pitch, pose_err_roll: head-pose error, the mean absolute difference in
  degrees between the generated frames' and the pose-source frames' yaw, pitch and roll
  (`face.head_pose`: solvePnP of the 68 points on a generic 3-D face); the pose source is the
  truth unless --pose-source is given.
Frames without a usable face (none, or a profile) are left out of the face measures and counted
in `faces`; with several faces the largest is used (noted).

Not supported: SyncNet's LSE-C / LSE-D. They need the SyncNet weights, which cannot be obtained
or tested here, so no number is reported rather than an untested one; on SynthTalk, `lag` and
`sync` measure audio-to-mouth synchronisation against the exact truth.
"""
from __future__ import annotations

import math
import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from pcavs_jax.data import media
from pcavs_jax.data.media import InputError
from pcavs_jax.evaluate import metrics

PathLike = str | os.PathLike

NOT_SUPPORTED = {
    "LSE-C/LSE-D": "not supported: SyncNet's lip-sync confidence and distance need the SyncNet "
                   "weights, which cannot be obtained or tested here. On SynthTalk, 'lag' and "
                   "'sync' measure audio-mouth synchronisation against the exact truth."}


def read_frames(path: PathLike, max_frames: int | None = None) -> np.ndarray:
  """(T, H, W, 3) uint8 frames of a video (at 25 fps), a folder of frames, or an .npy array.

  Raises:
    InputError: unreadable input.
  """
  p = pathlib.Path(path)
  if p.is_dir():
    files = sorted(f for f in p.iterdir() if media.is_image_path(f) and not f.name.startswith("."))
    if not files:
      raise InputError(p, "folder holds no frames", "missing")
    frames = np.stack([media.read_image(f, max_side=None) for f in files[:max_frames]])
  elif p.suffix.lower() == ".npy":
    if not p.exists():
      raise InputError(p, "frames file not found", "missing")
    try:
      frames = np.load(p)
    except Exception as e:
      raise InputError(p, f"not a readable .npy file ({e})", "corrupt") from None
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise InputError(p, f"expected (T, H, W, 3) frames, got {frames.shape}", "invalid")
    frames = np.stack([media.to_rgb_uint8(f, str(p)) for f in frames[:max_frames]])
  else:
    frames = media.read_video(p, fps=media.FPS, max_frames=max_frames)
  return frames


def _is_frames_dir(p: pathlib.Path) -> bool:
  return p.is_dir() and any(media.is_image_path(f) for f in p.iterdir())


def collect(path: PathLike) -> dict[str, pathlib.Path]:
  """Videos or frame folders under `path` by name (relative path without extension).

  A single video or frames folder is one entry named by its stem. Panels (`*_panel.mp4`) and
  hidden files are left out.

  Raises:
    InputError: nothing found.
  """
  p = pathlib.Path(path)
  if not p.exists():
    raise InputError(p, "not found", "missing")
  if p.is_file() or _is_frames_dir(p):
    return {p.stem: p}
  found = {}
  for dirpath, dirnames, filenames in os.walk(p):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    here = pathlib.Path(dirpath)
    for d in list(dirnames):
      if _is_frames_dir(here / d):
        found[(here / d).relative_to(p).as_posix()] = here / d
        dirnames.remove(d)
    for f in sorted(filenames):
      fp = here / f
      if f.startswith(".") or not (media.is_video_path(fp) or fp.suffix == ".npy"):
        continue
      if fp.stem.endswith("_panel"):
        continue
      found[fp.relative_to(p).with_suffix("").as_posix()] = fp
  if not found:
    raise InputError(p, "no videos or frame folders found", "missing")
  return found


def _is_records(p: pathlib.Path) -> bool:
  return p.is_dir() and (p / "manifest.json").exists()


def _truth_items(truth: pathlib.Path, split: str) -> Iterator[tuple[str, Any]]:
  """(name, frames or path) of the truth videos: record clips by id, else files by name."""
  if _is_records(truth):
    from pcavs_jax.data import records
    for clip in records.read_clips(truth, split):
      yield clip.clip_id, clip.frames
    return
  for name, path in collect(truth).items():
    yield name, path


def _for_name(path: pathlib.Path | None, name: str, what: str) -> pathlib.Path | None:
  """`path` itself, or the entry of a folder named like the video `name` (None: none given)."""
  if path is None or path.is_file() or _is_frames_dir(path):
    return path
  if not path.is_dir():
    raise InputError(path, f"{what} not found", "missing")
  found = [f for f in sorted(path.glob(f"{name}.*")) if not f.name.startswith(".")]
  if (path / name).is_dir():
    found.insert(0, path / name)
  if not found:
    raise InputError(path, f"no {what} named {name!r} in this folder", "missing")
  return found[0]


def reference_descriptor(path: PathLike, analyzer) -> np.ndarray:
  """(128,) dlib descriptor of the largest face of a reference photo (or a video's first frame).

  Raises:
    InputError: naming the photo, when it shows no usable face.
  """
  from pcavs_jax.data import alignment
  p = pathlib.Path(path)
  image = media.read_image(p) if media.is_image_path(p) else read_frames(p, 1)[0]
  al = alignment.clip_alignment(image[None], analyzer=analyzer, name=str(p))
  return analyzer.descriptor(image, al.track.landmarks[0])


def match_frames(generated: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   list[str]]:
  """Cuts both to the shorter length and resizes generated frames to the truth's size."""
  notes = []
  t = min(len(generated), len(truth))
  if len(generated) != len(truth):
    notes.append(f"{len(generated)} generated vs {len(truth)} truth frames: compared {t}")
  g, tr = generated[:t], truth[:t]
  if g.shape[1:3] != tr.shape[1:3]:
    notes.append(f"generated {g.shape[2]}x{g.shape[1]} resized to {tr.shape[2]}x{tr.shape[1]}")
    g = media.resize(g, tr.shape[1], tr.shape[2])
  return g, tr, notes


FACE_KEYS = ("lmd", "csim", "pose_err_yaw", "pose_err_pitch", "pose_err_roll")


def face_measures(generated: np.ndarray, truth: np.ndarray, analyzer, *,
                  reference: np.ndarray | None = None, pose_source: np.ndarray | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, int], list[str]]:
  """Per-frame LMD, CSIM and head-pose errors of generated frames (see the module docstring).

  Args:
    generated, truth: (T, H, W, 3) uint8 of the same length.
    analyzer: a `face.FaceAnalyzer` with landmarks (dlib).
    reference: (128,) descriptor of the reference photo; None compares truth frame t.
    pose_source: (P, H, W, 3) pose-source frames (the first T are used); None: the truth.

  Returns:
    (per-frame values by FACE_KEYS, frames with a usable face per video, notes).
  """
  from pcavs_jax.data import face
  tracks = {"generated": face.track_faces(generated, analyzer),
            "truth": face.track_faces(truth, analyzer)}
  if pose_source is not None:
    tracks["pose_source"] = face.track_faces(pose_source[:len(generated)], analyzer)
  notes = [n for name, tr in tracks.items() for n in tr.notes(name)]
  notes += [f"{name}: no usable face in any frame" for name, tr in tracks.items()
            if not tr.found.any()]
  gen, tru = tracks["generated"], tracks["truth"]
  if reference is None:
    reference = metrics.descriptors(truth, tru, analyzer)
  poses = metrics.head_poses(tracks.get("pose_source", tru))
  if len(poses) == 1:   # a pose image: one pose held for every frame
    poses = np.repeat(poses, len(generated), axis=0)
  t = min(len(generated), len(poses))
  pose_err = np.full((len(generated), 3), np.nan)
  pose_err[:t] = metrics.pose_error_per_frame(metrics.head_poses(gen)[:t], poses[:t])
  values = {"lmd": metrics.lmd_per_frame(metrics.aligned_landmarks(gen),
                                         metrics.aligned_landmarks(tru)),
            "csim": metrics.csim_per_frame(metrics.descriptors(generated, gen, analyzer),
                                           reference),
            "pose_err_yaw": pose_err[:, 0], "pose_err_pitch": pose_err[:, 1],
            "pose_err_roll": pose_err[:, 2]}
  return values, {name: int(tr.found.sum()) for name, tr in tracks.items()}, notes


def evaluate_pair(generated: np.ndarray, truth: np.ndarray, analyzer=None, *,
                  reference: np.ndarray | None = None, pose_source: np.ndarray | None = None,
                  cpbd_every: int = 1) -> dict[str, Any]:
  """SSIM, PSNR, CPBD (generated and truth), LMD, CSIM and pose errors of one generated video.

  Args:
    generated, truth: (T, H, W, 3) uint8.
    analyzer: `face.FaceAnalyzer` for the face measures; None, or one without landmarks (no
      dlib), reports them as unavailable (NaN).
    reference: (128,) descriptor of the reference photo for CSIM (None: the truth frames).
    pose_source: pose-source frames for the pose error (None: the truth).
    cpbd_every: CPBD on every n-th frame (it is the slowest measure).

  Returns:
    means by measure, 'frames', 'per_frame' (measure -> list), 'faces' and 'notes'.
  """
  g, t, notes = match_frames(generated, truth)
  if len(g) == 0:
    raise ValueError("no frames to compare")
  per_frame = {"ssim": metrics.ssim_per_frame(g, t), "psnr": metrics.psnr_per_frame(g, t)}
  faces: dict[str, int] = {}
  if analyzer is not None and analyzer.has_landmarks:
    values, faces, face_notes = face_measures(g, t, analyzer, reference=reference,
                                              pose_source=pose_source)
    per_frame.update(values)
    notes += face_notes
  out = {"frames": int(len(g)), **{k: metrics.nanmean(v) for k, v in per_frame.items()},
         "cpbd": metrics.mean_cpbd(g, cpbd_every),
         "cpbd_truth": metrics.mean_cpbd(t, cpbd_every)}
  out.update({k: math.nan for k in FACE_KEYS if k not in out})
  out["per_frame"] = {k: v.tolist() for k, v in per_frame.items()}
  if faces:
    out["faces"] = faces
  if notes:
    out["notes"] = notes
  return out


def _face_inputs(name: str, reference: pathlib.Path | None, pose_source: pathlib.Path | None,
                 analyzer, max_frames: int | None) -> dict[str, np.ndarray | None]:
  """The reference descriptor and pose-source frames of the video `name` (None where not given;
  nothing without a landmark model)."""
  if not analyzer.has_landmarks:
    return {}
  ref = _for_name(reference, name, "reference")
  pose = _for_name(pose_source, name, "pose source")
  return {"reference": None if ref is None else reference_descriptor(ref, analyzer),
          "pose_source": None if pose is None else read_frames(pose, max_frames)}


def evaluate_paths(generated: PathLike, truth: PathLike, *, split: str = "test",
                   reference: PathLike | None = None, pose_source: PathLike | None = None,
                   detector: str = "hog", analyzer=None, max_frames: int | None = None,
                   cpbd_every: int = 1, progress: bool = True) -> dict[str, Any]:
  """Scores generated videos against ground-truth videos (see the module docstring).

  Args:
    generated, truth: see the module docstring.
    split: record split when `truth` is a record folder.
    reference: the reference photo (CSIM), or a folder of them named like the videos.
    pose_source: the pose source (pose error), or a folder of them named like the videos.
    detector: face detector ('hog' or 'cnn'), unless `analyzer` is given.
    analyzer: a `face.FaceAnalyzer` to use.
    max_frames: compare at most this many frames.
    cpbd_every: CPBD on every n-th frame.
    progress: a bar of videos scored on stderr (when it is a terminal).

  Returns:
    The report: 'metrics' (means over videos), 'per_video' (with per-frame values),
    'unmatched', 'notes'.

  Raises:
    InputError: unreadable inputs, a reference without a face, or no generated video has a
      truth.
  """
  from tqdm import tqdm

  from pcavs_jax.data import face
  gen_p, truth_p = pathlib.Path(generated), pathlib.Path(truth)
  ref_p = pathlib.Path(reference) if reference else None
  pose_p = pathlib.Path(pose_source) if pose_source else None
  gens = collect(gen_p)
  notes: list[str] = []
  analyzer = analyzer or face.get_analyzer(detector)
  if not analyzer.has_landmarks:
    notes.append("lmd, csim and pose errors unavailable: " + analyzer.note)
  single = len(gens) == 1 and not _is_records(truth_p) and (truth_p.is_file()
                                                            or _is_frames_dir(truth_p))
  per_video: dict[str, dict] = {}
  matched: set[str] = set()
  with tqdm(total=1 if single else len(gens), unit="video", desc="evaluate", file=sys.stderr,
            disable=None if progress else True) as bar:
    for name, source in _truth_items(truth_p, split):
      key = next(iter(gens)) if single else name
      if key not in gens:
        continue
      t = source if isinstance(source, np.ndarray) else read_frames(source, max_frames)
      g = read_frames(gens[key], max_frames)
      faces = _face_inputs(key, ref_p, pose_p, analyzer, max_frames)
      per_video[key] = evaluate_pair(g, t[:max_frames], analyzer, cpbd_every=cpbd_every, **faces)
      matched.add(key)
      bar.update()
      if single:
        break
  unmatched = sorted(set(gens) - matched)
  if not per_video:
    raise InputError(truth_p, f"no ground truth matches the generated videos "
                              f"({', '.join(sorted(gens)[:5])}...)", "missing")
  if unmatched:
    notes.append(f"{len(unmatched)} generated videos have no ground truth and were not scored")
  return {"mode": "paired", "generated": str(gen_p), "truth": str(truth_p),
          "reference": str(ref_p) if ref_p else None,
          "pose_source": str(pose_p) if pose_p else "truth", "metrics": _means(per_video),
          "per_video": per_video, "unmatched": unmatched, "notes": notes,
          "detector": analyzer.detector, "face_measures": analyzer.has_landmarks,
          "not_supported": NOT_SUPPORTED}


def _means(per_video: dict[str, dict]) -> dict[str, float]:
  """Each measure's mean over videos (NaN-aware), and the videos and frames scored."""
  keys = ("ssim", "psnr", "cpbd", "cpbd_truth") + FACE_KEYS
  means = {k: metrics.nanmean([v[k] for v in per_video.values()]) for k in keys}
  means["videos"] = len(per_video)
  means["frames"] = int(sum(v["frames"] for v in per_video.values()))
  return means


def default_report_path(generated: PathLike) -> pathlib.Path:
  """Where a report goes without --report: GEN/evaluation.json for a folder of videos, else
  beside the video (<stem>_evaluation.json)."""
  g = pathlib.Path(generated)
  return g / "evaluation.json" if g.is_dir() and not _is_frames_dir(g) else (
      g.with_name(g.stem + "_evaluation.json"))
