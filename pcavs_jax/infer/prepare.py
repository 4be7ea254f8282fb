"""Input preparation: references, audio and pose sources read, checked and aligned as training
data is (`pcavs_jax.data.alignment`, `pcavs_jax.data.audio`).

The largest face of each reference image is detected (dlib, 68 landmarks) and aligned on its own;
a pose video gets the official clip alignment (one similarity, a smoothed per-frame mouth
translation); audio becomes 16 kHz mono, the official mel, and one (80, 20) window per 1/25 s.
Frame t takes its pose from pose frame `loop_indices(P, T)[t]`: a pose video longer than the
audio is cut, a shorter one is played forwards and backwards as the official demo does
(`strict_pose_length` refuses it instead); a single pose image holds that pose; without a pose
source the reference's own pose is held. The official demo drops two frames at each end; here
every frame of the audio is drawn (edge-padded mel windows), so the video is as long as the audio.

Official checkpoints were trained on aligned frames cropped by the official loader (rows
[0, 192), columns [16, 208) of the 224 crop, resized back to 224): `official_crop`.
"""
from __future__ import annotations

import pathlib

import numpy as np

from pcavs_jax.data import media
from pcavs_jax.data.clips import FPS, SAMPLES_PER_FRAME
from pcavs_jax.data.media import InputError
from pcavs_jax.infer.jobs import JobSpec, PathLike, PreparedJob, PrepareOptions, timed

MIN_FRAMES = 5                 # a mel window spans 5 frames: shorter audio drives nothing
READ_MAX_SIDE = 1280           # videos are decoded at most this large (faces fill talking heads)
OFFICIAL_CROP_224 = 16         # the official loader's crop margin at 224 px


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


def official_crop(frames: np.ndarray) -> np.ndarray:
  """The official loader's crop of aligned (T, R, R, 3) frames: top, left and right margins of
  16 px at 224 (bottom 32), resized back to R with bilinear filtering."""
  r = frames.shape[1]
  c = round(OFFICIAL_CROP_224 * r / 224)
  return media.resize(frames[:, :r - 2 * c, c:r - c], r, r)


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
  from pcavs_jax.data import alignment, face
  r = options.resolution
  if options.aligned:
    out = media.resize(frames, r, r)
  else:
    analyzer = face.get_analyzer(options.detector)
    clips = [f[None] for f in frames] if each else [frames]
    out = []
    for clip in clips:
      al = alignment.clip_alignment(clip, size=r, analyzer=analyzer, name=name)
      out.append(alignment.align_frames(clip, al.transforms, r))
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
  if path.suffix.lower() not in (".wav", ".flac", ".ogg"):
    # ffmpeg decodes these; its metadata (imageio-ffmpeg) does not give the source's rate.
    return [f"audio {path.name}: decoded by ffmpeg to {media.SAMPLE_RATE} Hz mono"]
  try:
    import soundfile
    info = soundfile.info(str(path))
    sr, channels, subtype = info.samplerate, info.channels, info.subtype
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
  with timed(timings, "audio"):
    notes = _audio_notes(p) if p.is_file() else []
    wav = media.read_audio(p)
    media.check_speech(wav, p, min_frames=MIN_FRAMES)
  t = audio_lib.num_video_frames(len(wav))
  if options.max_frames:
    t = min(t, options.max_frames)
  with timed(timings, "mel"):
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
  with timed(timings, "reference"):
    refs, n = prepare_reference(spec.reference, options, spec.num_references)
  notes += n
  job = PreparedJob(name=spec.name, references=refs, wav=wav, windows=windows, notes=notes,
                    timings=timings, row=spec.row,
                    inputs=spec.inputs)
  if spec.pose:
    with timed(timings, "pose"):
      job.pose, job.pose_index, n = prepare_frames_source(
          spec.pose, "pose", t, options, spec.num_pose_frames, options.strict_pose_length)
    notes += n
  mouth = spec.mouth_source
  implicit = mouth is None and media.is_video_path(spec.audio)
  if options.mouth and (mouth or implicit):
    with timed(timings, "mouth"):
      try:
        job.mouth, job.mouth_index, n = prepare_frames_source(
            mouth or spec.audio, "mouth", t, options, spec.num_mouth_frames)
        notes += n
      except InputError as e:
        if not implicit:
          raise
        notes.append(f"panel: no mouth-source column ({e})")
  return job
