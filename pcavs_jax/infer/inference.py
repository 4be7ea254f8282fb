"""Talking-face generation: a reference photo, a speech track and a pose source to an mp4.

  pcavs-jax generate --checkpoint CKPT --reference IMG_OR_DIR --audio WAV_OR_VIDEO \
      [--pose VIDEO_OR_IMAGE] --out OUT.mp4 [--panel] [--frames-dir DIR] [--batch-size 8]
  pcavs-jax generate --checkpoint CKPT --manifest jobs.csv|jobs.jsonl|demo.csv --out DIR
  pcavs-jax generate --checkpoint CKPT --synthtalk EVAL_SET.npz --out DIR
  pcavs-jax generate --checkpoint CKPT --records DIR [--split test] --out DIR

Inputs are prepared like training data (`pcavs_jax.data.face`, `pcavs_jax.data.audio`): the largest face of
each reference image is detected (dlib, 68 landmarks) and aligned on its own; a pose video gets the
official clip alignment (one similarity, a smoothed per-frame mouth translation); audio becomes 16 kHz mono, the official mel, and one (80, 20) window per 1/25 s. The
identity is encoded once per job (several references are averaged, as E_i does). Frame t takes its
pose from pose frame `loop_indices(P, T)[t]`: a pose video longer than the audio is cut, a shorter
one is played forwards and backwards as the official demo does (`--strict-pose-length` refuses it
instead); a single pose image holds that pose (a frontal face gives the paper's frontalization);
without a pose source the reference's own pose is held. The official demo drops two frames at
each end; here every frame of the audio is drawn (edge-padded mel windows), so the video is as
long as the audio.

Jobs run through one `FrameDriver`: frames of many jobs are packed into fixed-size device
batches (the last one padded, so the network compiles once), split across `jax.local_devices()`
with a sharded jit. Outputs are written atomically (hidden temporary name, then renamed), so a
killed run leaves no half-written `<name>.mp4`, and a re-run of a manifest skips finished outputs.
A job that fails (missing file, no face, bad audio, ...) is recorded with its reason in the
results file (JSON lines) while the others complete. Across hosts, job i runs on host
i mod `jax.process_count()`.

Manifests (paths relative to the manifest's folder, else to the working directory):
- CSV with a header: `reference,audio[,pose][,mouth_source][,name]` (`output` is read as `name`);
- JSON lines: one object per job with the same keys;
- the official 8-field `demo.csv` rows (space separated, no header): reference folder, number of
  references, pose frames folder (not a folder: the reference's own pose), number of pose frames,
  audio, mouth-source frames folder, number of mouth frames, mel .npy (or `dummy`).

Official checkpoints were trained on aligned frames cropped by the official loader (rows
[0, 192), columns [16, 208) of the 224 crop, resized back to 224); `--official-crop` repeats that
crop, and is on by default when the checkpoint is a folder of official `.pth` files.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import csv
import dataclasses
import functools
import io
import json
import math
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from pcavs_jax.data import media
from pcavs_jax.data.media import InputError

FPS = media.FPS
SAMPLES_PER_FRAME = media.SAMPLES_PER_FRAME
MIN_FRAMES = 5                 # a mel window spans 5 frames: shorter audio drives nothing
MAX_REFERENCES = 8
READ_MAX_SIDE = 1280           # videos are decoded at most this large (faces fill talking heads)
OFFICIAL_CROP_224 = 16         # the official loader's crop margin at 224 px
RESULTS_FILE = "results.jsonl"
MANIFEST_KEYS = ("reference", "audio", "pose", "mouth_source", "name")
PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------
# Jobs and their preparation
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class JobSpec:
  """One generation job as a user wrote it.

  Attributes:
    name: output name, relative to the output folder, without '.mp4' (may contain '/').
    reference: reference image, folder of images, or video (first frame).
    audio: the driving audio: a sound file or a video with an audio track.
    pose: pose source: video, image, folder of frames, or None (the reference's own pose).
    mouth_source: video or frames folder shown in the panel's last column (default: the audio's
      own video, when the audio comes from a video).
    num_references: use at most this many reference images (official rows).
    num_pose_frames: use at most this many pose frames (official rows).
    num_mouth_frames: use at most this many mouth-source frames (official rows).
    mel: an .npy mel (M, 80) to use instead of computing it (official rows).
    row: the manifest row (1-based), for reports.
  """
  name: str
  reference: str
  audio: str
  pose: str | None = None
  mouth_source: str | None = None
  num_references: int | None = None
  num_pose_frames: int | None = None
  num_mouth_frames: int | None = None
  mel: str | None = None
  row: int | None = None


@dataclasses.dataclass
class RowError:
  """A manifest row that names no runnable job; recorded as a failure."""
  name: str
  row: int
  problem: str
  kind: str = "invalid"


@dataclasses.dataclass
class PrepareOptions:
  """How inputs are prepared.

  Attributes:
    resolution: the model's frame size.
    aligned: inputs are already aligned face crops (SynthTalk frames, preprocessed clips): no
      detection, only a resize.
    official_crop: apply the official loader's crop after alignment (official checkpoints).
    detector: face detector, 'hog' (dlib, default) or 'cnn'; faces get dlib's 68 landmarks and
      the official alignment (`pcavs_jax.data.face`).
    max_references: references used from a folder.
    max_frames: cut the audio to at most this many frames.
    strict_pose_length: refuse a pose video shorter than the audio instead of looping it.
    mouth: also prepare the mouth source (the panel needs it).
  """
  resolution: int = 224
  aligned: bool = False
  official_crop: bool = False
  detector: str = "hog"
  max_references: int = MAX_REFERENCES
  max_frames: int | None = None
  strict_pose_length: bool = False
  mouth: bool = False


@dataclasses.dataclass
class PreparedJob:
  """A job's model inputs.

  Attributes:
    name: output name.
    references: (N, R, R, 3) uint8 aligned references.
    wav: (S,) float32 16 kHz mono driving audio, cut to the video's length.
    windows: (T, 80, 20) float32 mel windows, one per output frame.
    pose: (P, R, R, 3) uint8 aligned pose frames, or None for the reference's own pose.
    pose_index: (T,) frame t's pose frame.
    mouth: (M, R, R, 3) uint8 mouth-source frames for the panel, or None.
    mouth_index: (T,) frame t's mouth frame.
    notes: what was converted or adapted (downmixed audio, looped pose video, ...).
    timings: seconds spent per preparation stage.
    inputs: the input paths, for reports.
  """
  name: str
  references: np.ndarray
  wav: np.ndarray
  windows: np.ndarray
  pose: np.ndarray | None = None
  pose_index: np.ndarray | None = None
  mouth: np.ndarray | None = None
  mouth_index: np.ndarray | None = None
  notes: list[str] = dataclasses.field(default_factory=list)
  timings: dict[str, float] = dataclasses.field(default_factory=dict)
  inputs: dict[str, str] = dataclasses.field(default_factory=dict)
  row: int | None = None

  @property
  def num_frames(self) -> int:
    return int(self.windows.shape[0])

  def pose_frame(self, t: int) -> np.ndarray:
    return self.references[0] if self.pose is None else self.pose[self.pose_index[t]]


def loop_indices(num_source: int, length: int) -> np.ndarray:
  """Source frame of each of `length` output frames, as the official demo loops a pose video.

  The source is played forwards, then backwards, then forwards again (each end frame shown
  twice), and cut where the output ends: 0, 1, ..., n-1, n-1, ..., 0, 0, 1, ...
  """
  t = np.arange(length)
  if num_source < 1:
    raise ValueError("no source frames to loop")
  forward = (t // num_source) % 2 == 0
  return np.where(forward, t % num_source, num_source - 1 - t % num_source)


def _timed(timings: dict[str, float], key: str):
  class _Timer:
    def __enter__(self):
      self.start = time.perf_counter()

    def __exit__(self, *exc):
      timings[key] = timings.get(key, 0.0) + time.perf_counter() - self.start
  return _Timer()


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
  import cv2
  if frames.shape[1:3] == (size, size):
    return frames
  interp = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_LINEAR
  return np.stack([cv2.resize(np.ascontiguousarray(f), (size, size), interpolation=interp)
                   for f in frames])


def official_crop(frames: np.ndarray) -> np.ndarray:
  """The official loader's crop of aligned (T, R, R, 3) frames: top, left and right margins of
  16 px at 224 (bottom 32), resized back to R with bilinear filtering."""
  import cv2
  r = frames.shape[1]
  c = round(OFFICIAL_CROP_224 * r / 224)
  return np.stack([cv2.resize(np.ascontiguousarray(f[:r - 2 * c, c:r - c]), (r, r),
                              interpolation=cv2.INTER_LINEAR) for f in frames])


def _list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".") and media.is_image_path(p))


def _image_notes(path: pathlib.Path, what: str) -> list[str]:
  """Conversions `media.read_image` makes silently, said out loud for the report."""
  from PIL import Image
  try:
    with Image.open(path) as img:
      mode, size = img.mode, img.size
  except Exception:  # read_image reports the real problem
    return []
  notes = []
  kinds = {"L": "grayscale", "LA": "grayscale with alpha", "1": "1-bit", "P": "palette",
           "PA": "palette with alpha", "RGBA": "RGBA (alpha composited over white)",
           "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit integer",
           "F": "floating point", "CMYK": "CMYK"}
  if mode in kinds:
    notes.append(f"{what} {path.name}: {kinds[mode]} image converted to 8-bit RGB")
  if max(size) > media.MAX_IMAGE_SIDE:
    notes.append(f"{what} {path.name}: {size[0]}x{size[1]} image downscaled to at most "
                 f"{media.MAX_IMAGE_SIDE} px")
  return notes


def read_visual(path: PathLike, what: str, limit: int | None = None
                ) -> tuple[np.ndarray, str, list[str]]:
  """Frames of an image, a video (25 fps) or a folder of frames.

  Args:
    path: the input.
    what: its role ('reference', 'pose', ...), for messages.
    limit: read at most this many frames.

  Returns:
    (frames (K, H, W, 3) uint8, kind 'image' | 'video' | 'frames', notes).

  Raises:
    InputError: naming the input and the problem.
  """
  p = pathlib.Path(path)
  if p.is_dir():
    files = _list_images(p)
    if not files:
      raise InputError(p, f"{what} folder holds no image files", "missing")
    files = files[:limit] if limit else files
    notes = _image_notes(files[0], what)
    frames = [media.read_image(f) for f in files]
    if len({f.shape for f in frames}) > 1:
      raise InputError(p, f"{what} frames differ in size", "invalid")
    return np.stack(frames), "frames", notes
  if not p.exists():
    raise InputError(p, f"{what} not found", "missing")
  if media.is_image_path(p):
    notes = _image_notes(p, what)
    return media.read_image(p)[None], "image", notes
  if media.is_video_path(p):
    return media.read_video(p, fps=FPS, max_side=READ_MAX_SIDE, max_frames=limit), "video", []
  raise InputError(p, f"unrecognised {what} file type '{p.suffix}' (expected an image, a video "
                      "or a folder of frames)", "unsupported")


def align(frames: np.ndarray, kind: str, name: str, options: PrepareOptions,
          each: bool = False, notes: list[str] | None = None) -> np.ndarray:
  """Aligned (K, R, R, 3) crops of frames read by `read_visual` (the official alignment).

  Args:
    frames: (K, H, W, 3) uint8.
    kind: 'image', 'video' or 'frames'.
    name: the input, for messages.
    options: preparation options (aligned inputs are only resized).
    each: align every frame on its own (separate photos), not once for the clip.
    notes: if given, faces left out or chosen (several faces, profiles) are appended.

  Raises:
    InputError: no face found, or a profile face the landmarks cannot fit.
  """
  from pcavs_jax.data import face
  r = options.resolution
  if options.aligned:
    out = _resize(frames, r)
  else:
    analyzer = face.get_analyzer(options.detector)
    clips = [f[None] for f in frames] if each else [frames]
    out = []
    for clip in clips:
      al = face.clip_alignment(clip, size=r, analyzer=analyzer, name=name)
      out.append(face.align_frames(clip, al.transforms, r))
      if notes is not None:
        notes += [n for n in al.notes if n not in notes]
    out = np.concatenate(out)
  return official_crop(out) if options.official_crop else out


def prepare_reference(path: PathLike, options: PrepareOptions, limit: int | None = None
                      ) -> tuple[np.ndarray, list[str]]:
  """Aligned references (N, R, R, 3) from an image, a folder of images or a video's first frame."""
  p = pathlib.Path(path)
  limit = min(limit or options.max_references, options.max_references)
  if p.is_dir():
    files = _list_images(p)[:limit] if p.exists() else []
    if not files:
      raise InputError(p, "reference folder holds no image files", "missing")
    refs, notes = [], []
    for f in files:  # each photo is aligned on its own, and names itself in errors
      frames, kind, n = read_visual(f, "reference")
      notes += n
      refs.append(align(frames, kind, str(f), options, notes=notes)[0])
    return np.stack(refs), notes
  frames, kind, notes = read_visual(p, "reference", limit=1)
  return align(frames[:1], "image", str(p), options, notes=notes), notes


def _audio_notes(path: pathlib.Path) -> list[str]:
  """The conversions of `media.read_audio`, for the report."""
  notes = []
  try:
    if path.suffix.lower() in (".wav", ".flac", ".ogg"):
      import soundfile
      info = soundfile.info(str(path))
      sr, channels, subtype = info.samplerate, info.channels, info.subtype
    else:
      mi = media.probe(path)
      sr, channels, subtype = mi.sample_rate, mi.channels, None
  except Exception:  # read_audio reports the real problem
    return notes
  if channels not in (None, 1, "mono"):
    notes.append(f"audio {path.name}: {channels} channels downmixed to mono")
  if sr and sr != media.SAMPLE_RATE:
    notes.append(f"audio {path.name}: resampled from {sr} Hz to {media.SAMPLE_RATE} Hz")
  if subtype and subtype not in ("PCM_16",):
    notes.append(f"audio {path.name}: {subtype} samples read as float")
  return notes


def prepare_audio(path: PathLike, options: PrepareOptions, mel_path: str | None = None,
                  timings: dict[str, float] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """16 kHz mono waveform (cut to whole frames) and one mel window per 25 fps frame.

  Args:
    path: sound file or video.
    options: preparation options (max_frames).
    mel_path: an .npy mel to use instead of computing one.
    timings: if given, seconds of 'audio' (decode, resample, checks) and 'mel' are added.

  Raises:
    InputError: missing or corrupt audio, no audio track, silent, or shorter than 5 frames.
  """
  from pcavs_jax.data import audio as audio_lib
  timings = {} if timings is None else timings
  p = pathlib.Path(path)
  with _timed(timings, "audio"):
    notes = _audio_notes(p) if p.is_file() else []
    wav = media.read_audio(p)
    media.check_speech(wav, p, min_frames=MIN_FRAMES)
  t = audio_lib.num_video_frames(len(wav))
  if options.max_frames:
    t = min(t, options.max_frames)
  with _timed(timings, "mel"):
    return _mel_windows(wav, t, mel_path, notes)


def _mel_windows(wav: np.ndarray, t: int, mel_path: str | None, notes: list[str]
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  from pcavs_jax.data import audio as audio_lib
  if mel_path:
    try:
      mel = np.load(mel_path).astype(np.float32)
    except Exception as e:
      raise InputError(mel_path, f"not a readable .npy mel ({e})", "corrupt") from None
    if mel.ndim != 2 or mel.shape[1] != audio_lib.NUM_MELS:
      raise InputError(mel_path, f"mel must be (frames, 80), got {mel.shape}", "invalid")
  else:
    mel = audio_lib.melspectrogram(wav)
  return wav[:t * SAMPLES_PER_FRAME], audio_lib.mel_windows(mel, t), notes


def prepare_frames_source(path: PathLike, what: str, num_frames: int, options: PrepareOptions,
                          limit: int | None = None, strict: bool = False
                          ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Aligned frames of a pose or mouth source and the source frame of each output frame.

  Raises:
    InputError: unreadable source, no face, or (strict) a video shorter than the audio.
  """
  want = min(num_frames, limit) if limit else num_frames
  frames, kind, notes = read_visual(path, what, limit=want)
  frames = align(frames, kind, str(path), options, notes=notes)
  n = len(frames)
  if kind != "image" and n < num_frames:
    problem = (f"{what} source has {n} frames at {FPS} fps, shorter than the audio's "
               f"{num_frames}")
    if strict:
      raise InputError(path, problem + " (--strict-pose-length)", "too_short")
    notes.append(problem + ": played forwards and backwards to the audio's length, as the "
                 "official demo does")
  return frames, loop_indices(n, num_frames), notes


def prepare_job(spec: JobSpec, options: PrepareOptions) -> PreparedJob:
  """Reads, checks and aligns one job's inputs.

  Raises:
    InputError: naming the input and the problem.
  """
  timings: dict[str, float] = {}
  wav, windows, notes = prepare_audio(spec.audio, options, spec.mel, timings)
  t = len(windows)
  with _timed(timings, "reference"):
    refs, n = prepare_reference(spec.reference, options, spec.num_references)
  notes += n
  job = PreparedJob(name=spec.name, references=refs, wav=wav, windows=windows, notes=notes,
                    timings=timings, row=spec.row,
                    inputs={k: str(v) for k, v in (("reference", spec.reference),
                                                   ("audio", spec.audio), ("pose", spec.pose),
                                                   ("mouth_source", spec.mouth_source)) if v})
  if spec.pose:
    with _timed(timings, "pose"):
      job.pose, job.pose_index, n = prepare_frames_source(
          spec.pose, "pose", t, options, spec.num_pose_frames, options.strict_pose_length)
    notes += n
  mouth = spec.mouth_source
  implicit = mouth is None and media.is_video_path(spec.audio)
  if options.mouth and (mouth or implicit):
    with _timed(timings, "mouth"):
      try:
        job.mouth, job.mouth_index, n = prepare_frames_source(
            mouth or spec.audio, "mouth", t, options, spec.num_mouth_frames)
        notes += n
      except InputError as e:
        if not implicit:
          raise
        notes.append(f"panel: no mouth-source column ({e})")
  return job


# ----------------------------------------------------------------------------------------------
# The network on device batches
# ----------------------------------------------------------------------------------------------


def random_variables(model, seed: int = 0) -> dict:
  """Random PC-AVS variables without compiling `model.init` (slow on CPU at 224 px).

  For tests and benchmarks (no trained weights exist yet): generator kernels N(0, 1) (they are
  scaled at run time, equalised learning rate), modulation biases 1, other kernels
  N(0, 1 / fan_in), biases, noise strengths and BatchNorm means 0, scales and variances 1.
  """
  import jax
  from pcavs_jax.models.pcavs import abstract_variables
  abstract = abstract_variables(model)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    keys = [getattr(k, "key", str(k)) for k in path]
    name, shape = keys[-1], leaf.shape
    if name in ("scale", "var"):
      return np.ones(shape, leaf.dtype)
    if name == "kernel" and len(shape) >= 2:
      std = 1.0 if "generator" in keys else 1.0 / math.sqrt(max(1, int(np.prod(shape[:-1]))))
      return (rng.standard_normal(shape) * std).astype(leaf.dtype)
    if name == "bias" and "modulation" in keys:
      return np.ones(shape, leaf.dtype)
    return np.zeros(shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _encode_impl(model, variables, references):
  x = references.astype(np.float32) / 127.5 - 1.0
  out = model.apply(variables, x, method=model.encode_identity)
  return out["id_vector"], out["id_map"]


def _drive_impl(model, variables, id_vector, id_map, mel, pose):
  import jax.numpy as jnp
  x = pose.astype(jnp.float32) / 127.5 - 1.0
  out = model.apply(variables, {"id_vector": id_vector, "id_map": id_map}, mel, x,
                    method=model.drive)
  return jnp.clip(jnp.round((out.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


@functools.lru_cache(maxsize=8)
def _jitted(model, which: str):
  """One jitted function per (model, kind), shared by every driver: compiled once per shape."""
  import jax
  impl = _encode_impl if which == "encode" else _drive_impl
  return jax.jit(functools.partial(impl, model))


class FrameDriver:
  """Runs PC-AVS on fixed-size frame batches split across local devices.

  Attributes:
    model: the `PCAVS` module.
    batch_size: frames per call, a multiple of the device count.
    resolution: the model's frame size.
  """

  def __init__(self, model, variables: dict, batch_size: int = 8, devices=None):
    """Places the variables on every device.

    Args:
      model: `PCAVS`.
      variables: its variables.
      batch_size: frames per device per call.
      devices: the devices to split batches across (default `jax.local_devices()`).
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    devices = list(devices or jax.local_devices())
    self.model = model
    self.resolution = int(model.resolution)
    self.num_devices = len(devices)
    self.batch_size = max(1, int(batch_size)) * self.num_devices
    mesh = Mesh(np.asarray(devices), ("batch",))
    self._replicated = NamedSharding(mesh, PartitionSpec())
    self._sharded = NamedSharding(mesh, PartitionSpec("batch"))
    self.variables = jax.device_put(variables, self._replicated)

  def encode_identity(self, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E_i of (N, R, R, 3) uint8 references, averaged: (id_vector, id_map) on the host.

    The references go through one at a time (one compiled shape); E_i averages its outputs
    over references, which is the mean of the per-reference outputs.
    """
    encode = _jitted(self.model, "encode")
    outs = [encode(self.variables, r[None]) for r in references]
    return (np.mean([np.asarray(o[0][0]) for o in outs], axis=0),
            np.mean([np.asarray(o[1][0]) for o in outs], axis=0))

  def drive(self, id_vector: np.ndarray, id_map: np.ndarray, mel: np.ndarray,
            pose: np.ndarray):
    """Dispatches one batch (batch_size items); returns the (B, R, R, 3) uint8 device array."""
    import jax
    args = jax.device_put((id_vector, id_map, mel, pose), self._sharded)
    return _jitted(self.model, "drive")(self.variables, *args)

  def drive_job(self, job: PreparedJob) -> np.ndarray:
    """Every frame of one prepared job, in memory: (T, R, R, 3) uint8.

    The last batch is padded by repeating the final frame, so one compiled shape serves all.
    """
    id_vector, id_map = self.encode_identity(job.references)
    n, t = self.batch_size, job.num_frames
    ids = np.repeat(id_vector[None], n, 0), np.repeat(id_map[None], n, 0)
    frames = []
    for start in range(0, t, n):
      idx = np.minimum(np.arange(start, start + n), t - 1)
      pose = np.stack([job.pose_frame(int(i)) for i in idx])
      frames.append(np.asarray(self.drive(*ids, job.windows[idx].astype(np.float32), pose))[:t - start])
    return np.concatenate(frames)


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------


def check_name(name: str) -> str:
  """A job name as a relative output path without '.mp4'.

  Raises:
    InputError: empty, absolute or escaping the output folder.
  """
  n = str(name).strip().replace("\\", "/")
  if n.lower().endswith(".mp4"):
    n = n[:-4]
  parts = pathlib.PurePosixPath(n).parts
  if not n or n.startswith("/") or any(p in ("..", ".", "") for p in parts):
    raise InputError(name or "(empty)", "output name must be a relative path inside the output "
                                        "folder", "invalid")
  return n


@dataclasses.dataclass
class OutputPaths:
  """Where one job's files go."""
  video: pathlib.Path
  panel: pathlib.Path | None = None
  frames: pathlib.Path | None = None

  def done(self) -> bool:
    return all(p is None or p.exists() for p in (self.video, self.panel, self.frames))


def output_paths(out_dir: PathLike, name: str, panel: bool = False,
                 frames_dir: PathLike | None = None) -> OutputPaths:
  """Batch-mode layout: OUT/<name>.mp4, OUT/<name>_panel.mp4, FRAMES/<name>/%06d.png."""
  video = pathlib.Path(out_dir) / f"{name}.mp4"
  return OutputPaths(video, video.with_name(video.stem + "_panel.mp4") if panel else None,
                     pathlib.Path(frames_dir) / name if frames_dir else None)


def _temp_path(final: pathlib.Path) -> pathlib.Path:
  # Hidden, in the same folder (os.replace stays on one filesystem), and still '.mp4' so ffmpeg
  # picks the muxer.
  return final.with_name(f".{final.stem}.partial-{os.getpid()}{final.suffix}")


def _check_frames_target(path: pathlib.Path) -> None:
  """Refuses to replace a frames folder that holds anything but earlier frames of ours."""
  if path.is_file() or (path.is_dir() and any(
      not (f.is_file() and len(f.name) == 10 and f.name[:6].isdigit() and f.suffix == ".png")
      for f in path.iterdir())):
    raise InputError(path, "frames folder exists and holds other files: give a new or empty "
                           "folder", "invalid")


def _abort_writer(writer) -> None:
  try:
    writer.__exit__(RuntimeError, RuntimeError("aborted"), None)
  except Exception:
    pass


class _JobOutput:
  """Streams one job's frames into its video, panel and frames folder; commits atomically."""

  def __init__(self, job: PreparedJob, paths: OutputPaths, crf: int, preset: str):
    self.job = job
    self.paths = paths
    self.written = 0
    self._tmp: list[tuple[pathlib.Path, pathlib.Path]] = []
    self._writers = []
    paths.video.parent.mkdir(parents=True, exist_ok=True)
    self.video = self._writer(paths.video, crf, preset)
    self.panel = self._writer(paths.panel, crf, preset) if paths.panel else None
    self.frames_tmp = None
    if paths.frames:
      _check_frames_target(paths.frames)
      self.frames_tmp = _temp_path(paths.frames)
      shutil.rmtree(self.frames_tmp, ignore_errors=True)
      self.frames_tmp.mkdir(parents=True)
      self._tmp.append((self.frames_tmp, paths.frames))

  def _writer(self, final: pathlib.Path, crf: int, preset: str):
    tmp = _temp_path(final)
    tmp.unlink(missing_ok=True)
    self._tmp.append((tmp, final))
    w = media.VideoWriter(tmp, fps=FPS, audio=self.job.wav, crf=crf, preset=preset)
    self._writers.append(w)
    return w

  def write(self, frame: np.ndarray) -> None:
    t = self.written
    self.video.write(frame)
    if self.panel is not None:
      self.panel.write(panel_frame(self.job, frame, t))
    if self.frames_tmp is not None:
      media.write_image(self.frames_tmp / f"{t:06d}.png", frame)
    self.written += 1

  @property
  def complete(self) -> bool:
    return self.written >= self.job.num_frames

  def commit(self) -> None:
    for w in self._writers:
      w.close()
    for tmp, final in self._tmp:
      if tmp.is_dir():
        shutil.rmtree(final, ignore_errors=True)
      os.replace(tmp, final)

  def abort(self) -> None:
    for w in self._writers:
      _abort_writer(w)
    for tmp, _ in self._tmp:
      if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
      else:
        tmp.unlink(missing_ok=True)


def panel_frame(job: PreparedJob, generated: np.ndarray, t: int) -> np.ndarray:
  """reference | generated | pose source | mouth source, like the official avconcat."""
  cols = [job.references[0], generated]
  if job.pose is not None:
    cols.append(job.pose[job.pose_index[t]])
  if job.mouth is not None:
    cols.append(job.mouth[job.mouth_index[t]])
  return np.concatenate(cols, axis=1)


# ----------------------------------------------------------------------------------------------
# Running jobs
# ----------------------------------------------------------------------------------------------


def failure_record(name: str, error: BaseException, row: int | None = None,
                   inputs: dict | None = None) -> dict:
  """The results-file entry of a failed job."""
  if isinstance(error, InputError):
    reason, detail, where = error.kind, error.problem, error.path
  else:
    reason, detail, where = "error", f"{type(error).__name__}: {error}", ""
  rec = {"name": name, "status": "failed", "reason": reason, "input": where, "detail": detail,
         "message": str(error) if isinstance(error, InputError) else detail}
  if row is not None:
    rec["row"] = row
  if inputs:
    rec["inputs"] = inputs
  return rec


class _Results:
  """Appends one JSON line per finished job (flushed, so a killed run keeps what it did)."""

  def __init__(self, path: PathLike | None):
    self.records: list[dict] = []
    self._file = None
    if path is not None:
      pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
      self._file = open(path, "a", encoding="utf-8")

  def add(self, record: dict) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    self.records.append(record)
    if self._file:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()

  def close(self) -> None:
    if self._file:
      self._file.close()


@dataclasses.dataclass
class _Active:
  job: PreparedJob
  output: _JobOutput
  id_vector: np.ndarray
  id_map: np.ndarray
  start: float
  scheduled: int = 0
  failed: bool = False


def run_jobs(jobs: Iterable[JobSpec | PreparedJob | RowError], driver: FrameDriver,
             out_dir: PathLike, options: PrepareOptions | None = None, *,
             paths: dict[str, OutputPaths] | None = None, panel: bool = False,
             frames_dir: PathLike | None = None, results_path: PathLike | None = None,
             overwrite: bool = False, progress: bool = True, raise_errors: bool = False,
             prefetch: int = 2, crf: int = 18, preset: str = "fast") -> dict:
  """Generates the videos of many jobs, packing their frames into shared device batches.

  Jobs are prepared in a background thread (`prefetch` ahead) while the device runs; batch k+1
  is dispatched before batch k's frames are written.

  Args:
    jobs: job specs (prepared here), prepared jobs, or manifest row errors (recorded).
    driver: the network.
    out_dir: output folder (`output_paths` layout) unless `paths` names a job's files.
    options: input preparation (default: the driver's resolution, everything else default).
    paths: explicit output paths by job name (single mode).
    panel: also write `<name>_panel.mp4`.
    frames_dir: also write each job's frames as PNGs to `frames_dir/<name>/`.
    results_path: JSON-lines results file to append to (None: keep in memory only).
    overwrite: redo jobs whose outputs exist (otherwise they are skipped).
    progress: show a tqdm bar of frames.
    raise_errors: re-raise a job's failure instead of recording it (single mode).
    prefetch: jobs prepared ahead.
    crf, preset: x264 quality and speed.

  Returns:
    {'results': one record per job, 'counts': by status, 'frames': frames written,
     'seconds': wall time, 'timings': seconds per stage}.
  """
  from tqdm import tqdm
  options = options or PrepareOptions(resolution=driver.resolution)
  options = dataclasses.replace(options, mouth=options.mouth or panel)
  if options.resolution != driver.resolution:
    raise ValueError(f"options.resolution {options.resolution} != model {driver.resolution}")
  start = time.perf_counter()
  timings: dict[str, float] = collections.defaultdict(float)
  results = _Results(results_path)
  seen: set[str] = set()

  def fail(name: str, error: BaseException, row=None, inputs=None):
    if raise_errors:
      raise error
    results.add(failure_record(name, error, row, inputs))

  todo = []
  for job in jobs:
    if isinstance(job, RowError):
      fail(job.name, InputError(f"manifest row {job.row}", job.problem, job.kind), job.row)
      continue
    if job.name in seen:
      fail(job.name, InputError(job.name, "duplicate output name in this run", "invalid"),
           job.row)
      continue
    seen.add(job.name)
    jp = (paths or {}).get(job.name) or output_paths(out_dir, job.name, panel, frames_dir)
    if not overwrite and jp.done():
      results.add({"name": job.name, "status": "skipped", "output": str(jp.video),
                   "detail": "output exists (finished by an earlier run)"})
      continue
    todo.append((job, jp))

  bar = tqdm(total=0, unit="frame", desc="generate", disable=not progress, file=sys.stderr)
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prepare")
  queue: collections.deque = collections.deque()
  upcoming = iter(todo)

  def refill():
    while len(queue) < max(1, prefetch):
      nxt = next(upcoming, None)
      if nxt is None:
        return
      job, jp = nxt
      fut = pool.submit(prepare_job, job, options) if isinstance(job, JobSpec) else None
      queue.append((job, jp, fut))

  def activate() -> _Active | None:
    """The next prepared job, with its identity encoded and its writers open; None when done."""
    while True:
      refill()
      if not queue:
        return None
      spec, jp, fut = queue.popleft()
      refill()
      t0 = time.perf_counter()
      try:
        job = fut.result() if fut is not None else spec
        for k, v in job.timings.items():
          timings[k] += v
        if job.num_frames < 1:
          raise InputError(job.inputs.get("audio", job.name), "audio is too short: no frame",
                           "too_short")
        with _timed(timings, "identity"):
          id_vector, id_map = driver.encode_identity(job.references)
        with _timed(timings, "write"):
          output = _JobOutput(job, jp, crf, preset)
      except Exception as e:  # one job's failure never stops the others (unless single mode)
        fail(spec.name, e, spec.row, getattr(spec, "inputs", None) or _spec_inputs(spec))
        continue
      bar.total += job.num_frames
      bar.refresh()
      return _Active(job, output, id_vector, id_map, t0)

  def finish(active: _Active) -> None:
    if active.failed:
      return
    try:
      with _timed(timings, "write"):
        active.output.commit()
    except Exception as e:
      active.output.abort()
      fail(active.job.name, e, active.job.row, active.job.inputs)
      return
    p = active.output.paths
    rec = {"name": active.job.name, "status": "ok", "output": str(p.video),
           "frames": active.job.num_frames,
           "duration_s": round(active.job.num_frames / FPS, 3),
           "seconds": round(time.perf_counter() - active.start, 3), "inputs": active.job.inputs}
    if p.panel:
      rec["panel"] = str(p.panel)
    if p.frames:
      rec["frames_dir"] = str(p.frames)
    if active.job.notes:
      rec["notes"] = active.job.notes
    if active.job.row is not None:
      rec["row"] = active.job.row
    results.add(rec)

  def write_batch(items: list[tuple[_Active, int]], result) -> None:
    with _timed(timings, "network"):
      frames = np.asarray(result)  # waits for the device
    complete = []
    with _timed(timings, "write"):
      for k, (active, _) in enumerate(items):
        if active.failed:
          continue
        try:
          active.output.write(frames[k])
        except Exception as e:
          active.failed = True
          active.output.abort()
          fail(active.job.name, e, active.job.row, active.job.inputs)
          continue
        bar.update(1)
        if active.output.complete:
          complete.append(active)
    for active in complete:
      finish(active)

  b = driver.batch_size
  r = driver.resolution
  current: _Active | None = None
  in_flight: collections.deque = collections.deque()
  frames_done = 0
  try:
    while True:
      items: list[tuple[_Active, int]] = []
      while len(items) < b:
        if current is None or current.scheduled >= current.job.num_frames:
          current = activate()
          if current is None:
            break
        take = min(b - len(items), current.job.num_frames - current.scheduled)
        items += [(current, current.scheduled + i) for i in range(take)]
        current.scheduled += take
      if not items:
        break
      with _timed(timings, "assemble"):
        padded = items + [items[-1]] * (b - len(items))  # fixed shape: one compilation
        id_vector = np.stack([a.id_vector for a, _ in padded])
        id_map = np.stack([a.id_map for a, _ in padded])
        mel = np.stack([a.job.windows[t] for a, t in padded]).astype(np.float32)
        pose = np.stack([a.job.pose_frame(t) for a, t in padded])
        assert pose.shape[1:] == (r, r, 3), pose.shape
      with _timed(timings, "network"):
        result = driver.drive(id_vector, id_map, mel, pose)
      in_flight.append((items, result))
      frames_done += len(items)
      if len(in_flight) > 1:
        write_batch(*in_flight.popleft())
    while in_flight:
      write_batch(*in_flight.popleft())
  except BaseException:
    for items, _ in in_flight:
      for a, _ in items:
        a.output.abort()
    if current is not None:
      current.output.abort()
    raise
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    results.close()
  counts = collections.Counter(rec["status"] for rec in results.records)
  return {"results": results.records, "counts": dict(counts), "frames": frames_done,
          "seconds": time.perf_counter() - start, "timings": dict(timings)}


def _spec_inputs(spec) -> dict:
  if isinstance(spec, JobSpec):
    return {k: v for k in ("reference", "audio", "pose", "mouth_source")
            if (v := getattr(spec, k))}
  return {}


# ----------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------


def _resolve(value: str, base: pathlib.Path) -> str:
  """A manifest path: relative to the manifest's folder where it exists there, else as given."""
  p = pathlib.Path(os.path.expanduser(value))
  if p.is_absolute():
    return str(p)
  return str(base / p) if (base / p).exists() or not p.exists() else str(p)


def _default_name(reference: str, audio: str, pose: str | None) -> str:
  stem = lambda s: pathlib.Path(s.rstrip("/")).stem
  name = f"{stem(reference)}_{stem(audio)}"
  return name + (f"_{stem(pose)}" if pose else "")


def _int_or_none(text: str) -> int | None:
  try:
    v = int(text)
  except ValueError:
    return None
  return v if v > 0 else None


def official_row(fields: Sequence[str], row: int, base: pathlib.Path) -> JobSpec | RowError:
  """A job from an official 8-field demo.csv row (see the module docstring)."""
  if len(fields) != 8:
    return RowError(f"row{row}", row, f"official demo rows have 8 space-separated fields, "
                                      f"got {len(fields)}", "invalid")
  ref, ref_num, pose, pose_num, audio, mouth, mouth_num, mel = fields
  ref, audio = _resolve(ref, base), _resolve(audio, base)
  pose_path = _resolve(pose, base)
  pose_path = pose_path if os.path.isdir(pose_path) else None  # official: else the reference
  mouth_path = _resolve(mouth, base)
  mel_path = _resolve(mel, base)
  stem = lambda s: pathlib.Path(s.rstrip("/")).name
  name = (f"id_{stem(ref)}_pose_{stem(pose_path or ref)}_audio_"
          f"{pathlib.Path(audio).stem}")
  return JobSpec(name=name, reference=ref, audio=audio, pose=pose_path,
                 mouth_source=mouth_path if os.path.isdir(mouth_path) else None,
                 num_references=_int_or_none(ref_num), num_pose_frames=_int_or_none(pose_num),
                 num_mouth_frames=_int_or_none(mouth_num),
                 mel=mel_path if os.path.isfile(mel_path) else None, row=row)


def _spec_from_mapping(entry: dict, row: int, base: pathlib.Path) -> JobSpec | RowError:
  entry = {str(k).strip().lower(): (str(v).strip() if v is not None else "")
           for k, v in entry.items()}
  if "output" in entry and not entry.get("name"):
    entry["name"] = entry["output"]
  missing = [k for k in ("reference", "audio") if not entry.get(k)]
  fallback = entry.get("name") or f"row{row}"
  if missing:
    return RowError(fallback, row, f"missing {' and '.join(missing)} (columns: "
                                   f"{', '.join(MANIFEST_KEYS)})", "invalid")
  ref, audio = _resolve(entry["reference"], base), _resolve(entry["audio"], base)
  pose = _resolve(entry["pose"], base) if entry.get("pose") else None
  mouth = _resolve(entry["mouth_source"], base) if entry.get("mouth_source") else None
  try:
    name = check_name(entry.get("name") or _default_name(ref, audio, pose))
  except InputError as e:
    return RowError(fallback, row, f"bad output name: {e.problem}", "invalid")
  return JobSpec(name=name, reference=ref, audio=audio, pose=pose, mouth_source=mouth, row=row)


def read_manifest(path: PathLike) -> list[JobSpec | RowError]:
  """Jobs of a manifest: CSV with a header, JSON lines, or official 8-field demo.csv rows.

  Rows that cannot become a job (missing columns, bad JSON, a wrong field count) come back as
  `RowError`s, to be recorded as failures; their paths are checked only when the job runs.

  Raises:
    InputError: the manifest itself is missing, empty or a CSV without reference/audio columns.
  """
  p = pathlib.Path(path)
  if not p.is_file():
    raise InputError(p, "manifest not found", "missing")
  base = p.parent.absolute()
  text = p.read_text(encoding="utf-8-sig")
  lines = [(i + 1, l) for i, l in enumerate(text.splitlines())
           if l.strip() and not l.lstrip().startswith("#")]
  if not lines:
    raise InputError(p, "manifest has no rows", "invalid")
  jobs: list[JobSpec | RowError] = []
  if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
    for row, line in lines:
      try:
        entry = json.loads(line)
        if not isinstance(entry, dict):
          raise ValueError("not a JSON object")
      except ValueError as e:
        jobs.append(RowError(f"row{row}", row, f"not a JSON object ({e})", "invalid"))
        continue
      jobs.append(_spec_from_mapping(entry, row, base))
    return jobs
  first = lines[0][1]
  if "," not in first and len(first.split()) == 8:  # the official format has no header
    return [official_row(line.split(), row, base) for row, line in lines]
  reader = csv.reader(io.StringIO("\n".join(l for _, l in lines)))
  header = [h.strip().lower() for h in next(reader)]
  header = ["name" if h == "output" else h for h in header]
  if "reference" not in header or "audio" not in header:
    raise InputError(p, f"CSV manifest header must name 'reference' and 'audio' columns (and "
                        f"optionally pose, mouth_source, name); got {header}", "invalid")
  for (row, _), values in zip(lines[1:], reader):
    if len(values) > len(header):
      jobs.append(RowError(f"row{row}", row, f"{len(values)} fields for {len(header)} columns",
                           "invalid"))
      continue
    jobs.append(_spec_from_mapping(dict(zip(header, values)), row, base))
  return jobs


def shard_jobs(jobs: Sequence, process_index: int, process_count: int) -> list:
  """The jobs of one host: every process_count-th from process_index."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} out of range for {process_count} hosts")
  return list(jobs[process_index::process_count])


def results_path(out_dir: PathLike, process_index: int = 0, process_count: int = 1
                 ) -> pathlib.Path:
  """The results file of one host."""
  name = RESULTS_FILE if process_count == 1 else (
      f"results-{process_index:03d}-of-{process_count:03d}.jsonl")
  return pathlib.Path(out_dir) / name


# ----------------------------------------------------------------------------------------------
# Other job sources: the SynthTalk cross-driven set, clip records
# ----------------------------------------------------------------------------------------------


def eval_set_jobs(eval_set, resolution: int | None = None) -> Iterator[PreparedJob]:
  """One job per SynthTalk cross-driven triple: A's first frame, B's poses, C's audio.

  Frames are already aligned (resized to `resolution` when it differs); the panel's last column
  shows the exact truth. Named by triple id.
  """
  from pcavs_jax.data import audio as audio_lib
  r = resolution or eval_set.resolution
  for tr in eval_set.triples:
    t = tr.num_frames
    yield PreparedJob(
        name=tr.triple_id, references=_resize(tr.reference_frames[:1], r),
        wav=np.asarray(tr.audio, np.float32)[:t * SAMPLES_PER_FRAME],
        windows=audio_lib.mel_windows(tr.mel, t), pose=_resize(tr.pose_frames[:t], r),
        pose_index=np.arange(t), mouth=_resize(tr.truth_frames, r), mouth_index=np.arange(t),
        inputs={"reference": tr.reference_clip, "pose": tr.pose_clip, "audio": tr.audio_clip})


def record_jobs(records_dir: PathLike, split: str = "test", resolution: int | None = None,
                max_clips: int | None = None) -> Iterator[PreparedJob]:
  """Self-driven reconstruction of clip records (the paper's reconstruction evaluation).

  Identity from the clip's first frame, pose from its own frames, mouth from its own audio;
  named by clip id, so `pcavs-jax evaluate --truth RECORDS` finds the ground truth.
  """
  from pcavs_jax.data import records
  from pcavs_jax.data import audio as audio_lib
  for k, clip in enumerate(records.read_clips(records_dir, split)):
    if max_clips is not None and k >= max_clips:
      return
    r = resolution or clip.frames.shape[1]
    t = min(clip.num_frames, len(clip.audio) // SAMPLES_PER_FRAME, clip.mel.shape[0] // 4)
    frames = _resize(clip.frames[:t], r)
    yield PreparedJob(
        name=check_name(clip.clip_id), references=frames[:1],
        wav=np.asarray(clip.audio, np.float32)[:t * SAMPLES_PER_FRAME],
        windows=audio_lib.mel_windows(clip.mel, t), pose=frames, pose_index=np.arange(t),
        mouth=frames, mouth_index=np.arange(t), inputs={"clip": clip.clip_id})


# ----------------------------------------------------------------------------------------------
# The library entry points
# ----------------------------------------------------------------------------------------------


def is_official_checkpoint(path: PathLike) -> bool:
  """Whether a checkpoint path is a folder of official PyTorch files (trained on cropped faces)."""
  p = pathlib.Path(path)
  return p.is_dir() and any(p.glob("*_net_G.pth"))


def load_driver(checkpoint: PathLike, batch_size: int = 8, devices=None) -> FrameDriver:
  """A `FrameDriver` for any checkpoint form `pcavs_jax.checkpoint.load_checkpoint` reads."""
  from pcavs_jax.checkpoint import load_checkpoint
  model, variables = load_checkpoint(checkpoint)
  return FrameDriver(model, variables, batch_size=batch_size, devices=devices)


def _driver(checkpoint, batch_size: int) -> FrameDriver:
  return checkpoint if isinstance(checkpoint, FrameDriver) else load_driver(checkpoint,
                                                                            batch_size)


def _driver_and_options(checkpoint, batch_size: int, official: bool | None, **options
                        ) -> tuple["FrameDriver", PrepareOptions]:
  """The frame driver of a checkpoint and the input preparation that matches it.

  Official checkpoints get the official crop unless `official` says otherwise.
  """
  if official is None:
    official = not isinstance(checkpoint, FrameDriver) and is_official_checkpoint(checkpoint)
  driver = _driver(checkpoint, batch_size)
  return driver, PrepareOptions(resolution=driver.resolution, official_crop=official, **options)


def generate(checkpoint: PathLike | FrameDriver, reference: PathLike, audio: PathLike,
             out: PathLike, pose: PathLike | None = None, *, mouth_source: PathLike | None = None,
             panel: bool = False, frames_dir: PathLike | None = None, batch_size: int = 8,
             aligned: bool = False, official: bool | None = None,
             detector: str = "hog", max_frames: int | None = None,
             strict_pose_length: bool = False, progress: bool = True) -> dict:
  """One talking-face video: `reference` says who, `audio` what, `pose` how the head moves.

  Args:
    checkpoint: a checkpoint path, or a `FrameDriver` to reuse.
    reference: reference image, folder of images (averaged identity), or a video (first frame).
    audio: sound file or video; its audio is muxed into the output.
    out: the output .mp4; the panel goes to `<out stem>_panel.mp4`.
    pose: pose video (cut or looped to the audio), one image (fixed pose), a folder of frames,
      or None (the reference's own pose).
    mouth_source: the panel's last column (default: the audio's video, if it is one).
    panel: also write the side-by-side panel.
    frames_dir: also write the frames as PNGs here.
    batch_size: frames per device per network call.
    aligned: inputs are aligned face crops already (no detection).
    official: apply the official crop (default: when `checkpoint` is an official folder).
    detector: face detector, 'hog' (default) or 'cnn'.
    max_frames: cut the audio to this many frames.
    strict_pose_length: refuse a pose video shorter than the audio.
    progress: tqdm progress bar.

  Returns:
    The job's result record (status 'ok', output paths, frames, notes) with 'timings'.

  Raises:
    InputError: a bad input, naming it and the problem.
  """
  out = pathlib.Path(out)
  if out.suffix.lower() != ".mp4":
    raise InputError(out, "output must be an .mp4 file", "invalid")
  driver, options = _driver_and_options(checkpoint, batch_size, official, aligned=aligned,
                                        detector=detector, max_frames=max_frames,
                                        strict_pose_length=strict_pose_length, mouth=panel)
  spec = JobSpec(name=out.stem, reference=str(reference), audio=str(audio),
                 pose=str(pose) if pose else None,
                 mouth_source=str(mouth_source) if mouth_source else None)
  job = prepare_job(spec, options)
  paths = OutputPaths(out, out.with_name(out.stem + "_panel.mp4") if panel else None,
                      pathlib.Path(frames_dir) if frames_dir else None)
  summary = run_jobs([job], driver, out.parent, options, paths={job.name: paths}, panel=panel,
                     overwrite=True, progress=progress, raise_errors=True)
  return {**summary["results"][0], "timings": summary["timings"]}


def generate_batch(checkpoint: PathLike | FrameDriver, manifest: PathLike, out_dir: PathLike, *,
                   panel: bool = False, frames_dir: PathLike | None = None, batch_size: int = 8,
                   aligned: bool = False, official: bool | None = None,
                   detector: str = "hog", max_frames: int | None = None,
                   strict_pose_length: bool = False, overwrite: bool = False,
                   process_index: int | None = None, process_count: int | None = None,
                   progress: bool = True) -> dict:
  """Runs a manifest's jobs (this host's share); see `run_jobs` for what comes back.

  Failures are recorded in `results_path(out_dir, ...)` with their reasons; finished outputs
  of earlier runs are skipped unless `overwrite`.

  Raises:
    InputError: the manifest itself is unusable.
  """
  import jax
  jobs = read_manifest(manifest)
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  driver, options = _driver_and_options(checkpoint, batch_size, official, aligned=aligned,
                                        detector=detector, max_frames=max_frames,
                                        strict_pose_length=strict_pose_length, mouth=panel)
  return run_jobs(shard_jobs(jobs, pi, pc), driver, out_dir, options, panel=panel,
                  frames_dir=frames_dir, results_path=results_path(out_dir, pi, pc),
                  overwrite=overwrite, progress=progress)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def register(subparsers) -> argparse.ArgumentParser:
  """Adds the `generate` subcommand."""
  p = subparsers.add_parser(
      "generate", help="talking-face videos from a photo, speech and a pose source",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True,
                 help="exported checkpoint folder or folder of official .pth files")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--reference", help="reference image, folder of images, or video")
  src.add_argument("--manifest", help="jobs file: CSV, JSON lines, or official demo.csv")
  src.add_argument("--synthtalk", help="SynthTalk cross-driven eval_set.npz: one video per triple")
  src.add_argument("--records", help="clip record folder: self-driven reconstructions")
  p.add_argument("--audio", help="driving audio: sound file or video (single mode)")
  p.add_argument("--pose", help="pose source: video, image or frames folder (single mode)")
  p.add_argument("--mouth-source", help="panel's last column (single mode)")
  p.add_argument("--out", required=True, help="OUT.mp4 (single mode) or output folder")
  p.add_argument("--split", default="test", help="record split (--records)")
  p.add_argument("--max-clips", type=int, default=None, help="at most this many clips (--records)")
  p.add_argument("--panel", action="store_true",
                 help="also write <name>_panel.mp4: reference | generated | pose | mouth source")
  p.add_argument("--frames-dir", help="also write the frames as PNGs (per job: DIR/<name>/)")
  p.add_argument("--batch-size", type=int, default=8, help="frames per device per network call")
  p.add_argument("--aligned", action="store_true",
                 help="inputs are aligned face crops already: no face detection")
  crop = p.add_mutually_exclusive_group()
  crop.add_argument("--official-crop", dest="official", action="store_true", default=None,
                    help="apply the official loader's face crop (default: only for official "
                         ".pth checkpoints)")
  crop.add_argument("--no-official-crop", dest="official", action="store_false")
  p.add_argument("--detector", choices=("hog", "cnn"), default="hog",
                 help="face detector: dlib's HOG (default, fast) or its CNN (slower, finds "
                      "harder faces); faces get dlib's 68 landmarks and the official alignment")
  p.add_argument("--max-frames", type=int, default=None, help="cut the audio to this many frames")
  p.add_argument("--strict-pose-length", action="store_true",
                 help="refuse a pose video shorter than the audio instead of looping it")
  p.add_argument("--overwrite", action="store_true", help="redo jobs whose outputs exist")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=run)
  return p


def _print_summary(summary: dict, out: str) -> None:
  counts = summary["counts"]
  print(f"generate: {summary['frames']} frames in {summary['seconds']:.1f} s; "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; outputs in {out}")
  for rec in summary["results"]:
    if rec["status"] == "failed":
      print(f"  failed {rec['name']}: {rec['message']}")


def run(args: argparse.Namespace) -> int:
  """The `generate` subcommand; returns the exit code (1 when a job failed, 2 on bad input)."""
  try:
    if args.reference:
      if not args.audio:
        raise InputError("--audio", "single mode needs --audio with --reference", "missing")
      rec = generate(args.checkpoint, args.reference, args.audio, args.out, args.pose,
                     mouth_source=args.mouth_source, panel=args.panel,
                     frames_dir=args.frames_dir, batch_size=args.batch_size,
                     aligned=args.aligned, official=args.official,
                     detector=args.detector, max_frames=args.max_frames,
                     strict_pose_length=args.strict_pose_length,
                     progress=not args.no_progress)
      for note in rec.get("notes", []):
        print(f"note: {note}")
      print(f"generate: {rec['frames']} frames ({rec['duration_s']:.2f} s) -> {rec['output']}"
            + (f", panel {rec['panel']}" if rec.get("panel") else ""))
      return 0
    if args.audio or args.pose or args.mouth_source:
      raise InputError("--audio/--pose", "only with --reference (single mode); batch jobs name "
                       "them in the manifest", "invalid")
    if args.manifest:
      summary = generate_batch(
          args.checkpoint, args.manifest, args.out, panel=args.panel,
          frames_dir=args.frames_dir, batch_size=args.batch_size, aligned=args.aligned,
          official=args.official, detector=args.detector,
          max_frames=args.max_frames, strict_pose_length=args.strict_pose_length,
          overwrite=args.overwrite, progress=not args.no_progress)
    else:
      driver = load_driver(args.checkpoint, args.batch_size)
      if args.synthtalk:
        from pcavs_jax.data.synthtalk.eval_sets import load_eval_set
        jobs = list(eval_set_jobs(load_eval_set(args.synthtalk), driver.resolution))
      else:
        jobs = list(record_jobs(args.records, args.split, driver.resolution, args.max_clips))
      summary = run_jobs(jobs, driver, args.out, panel=args.panel, frames_dir=args.frames_dir,
                         results_path=results_path(args.out), overwrite=args.overwrite,
                         progress=not args.no_progress)
    _print_summary(summary, args.out)
    return 1 if summary["counts"].get("failed") else 0
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
