"""Media I/O shared by preprocessing and inference: images, 25 fps video, 16 kHz audio, mp4 out.

Every reader checks its input and raises `InputError` (a `ValueError`) whose message names the
file and the problem, so a batch job can record the reason and move on. Video and audio go
through the ffmpeg binary that `imageio-ffmpeg` ships (h264 and AAC included): headers with its
`read_frames` metadata, mp4 writing with its `write_frames`; decoding runs ffmpeg directly, as
its log tells a damaged file from a short one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import re
import subprocess
import tempfile
from collections.abc import Iterable

import numpy as np

from pcavs_jax.data.clips import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: F401 (re-exported)

MAX_IMAGE_SIDE = 2048          # larger images are downscaled on load
SILENCE_PEAK = 1e-4            # peak below this (-80 dBFS) counts as silent
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")
_SOUNDFILE_EXTS = (".wav", ".flac", ".ogg")
_FFMPEG_TIMEOUT_S = 600
# No `preexec_fn=os.setpgrp` in imageio-ffmpeg's forked child: Python there can deadlock beside JAX.
os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")

PathLike = str | os.PathLike


class InputError(ValueError):
  """A user-supplied input that cannot be used; the message names the input and the problem.

  Attributes:
    path: the offending input (file path or a name).
    problem: what is wrong with it, in a few words.
    kind: a short category for reports: 'missing', 'corrupt', 'unsupported', 'no_video',
      'no_audio', 'no_face', 'profile_face', 'too_short', 'silent', 'too_large', 'timeout' or
      'invalid'.
  """

  def __init__(self, path: PathLike | str, problem: str, kind: str = "invalid"):
    self.path = str(path)
    self.problem = problem
    self.kind = kind
    super().__init__(f"{self.path}: {problem}")


def is_image_path(path: PathLike) -> bool:
  return pathlib.Path(path).suffix.lower() in IMAGE_EXTS


def is_video_path(path: PathLike) -> bool:
  return pathlib.Path(path).suffix.lower() in VIDEO_EXTS


def _check_file(path: PathLike, what: str) -> pathlib.Path:
  p = pathlib.Path(path)
  if not p.exists():
    raise InputError(p, f"{what} not found", "missing")
  if not p.is_file():
    raise InputError(p, f"{what} path is not a file", "missing")
  if p.stat().st_size == 0:
    raise InputError(p, f"{what} file is empty (0 bytes)", "corrupt")
  return p


# --------------------------------------------------------------------------------------- Images


def to_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
  """Converts an image array of any common layout to (H, W, 3) uint8 RGB.

  Grayscale is replicated to three channels, alpha is composited over white, 16-bit integers are
  scaled to 8 bits and floats are read as [0, 1] (or [0, 255] when their maximum exceeds 1).

  Raises:
    InputError: for shapes that are not an image or values that are not finite.
  """
  a = np.asarray(image)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)):
    raise InputError(name, f"not an image: array of shape {a.shape}")
  if a.shape[0] < 1 or a.shape[1] < 1:
    raise InputError(name, f"image has no pixels (shape {a.shape})")
  if a.dtype == np.uint8:
    f = a.astype(np.float32) / 255.0
  elif a.dtype == np.bool_:
    f = a.astype(np.float32)
  elif np.issubdtype(a.dtype, np.integer):
    # 16-bit (and 32-bit 'I' mode images holding 16-bit data) are scaled by their nominal range.
    top = 65535.0 if a.max(initial=0) <= 65535 else float(np.iinfo(a.dtype).max)
    f = np.clip(a.astype(np.float32) / top, 0.0, 1.0)
  elif np.issubdtype(a.dtype, np.floating):
    if not np.all(np.isfinite(a)):
      raise InputError(name, "image contains NaN or infinite values")
    f = a.astype(np.float32)
    if f.max(initial=0.0) > 1.0:
      f = f / 255.0
    f = np.clip(f, 0.0, 1.0)
  else:
    raise InputError(name, f"unsupported image dtype {a.dtype}", "unsupported")
  if f.ndim == 2:
    f = np.repeat(f[..., None], 3, axis=-1)
  elif f.shape[-1] == 2:  # gray + alpha
    f = np.concatenate([np.repeat(f[..., :1], 3, axis=-1), f[..., 1:]], axis=-1)
  if f.shape[-1] == 4:
    alpha = f[..., 3:]
    f = f[..., :3] * alpha + (1.0 - alpha)
  return np.round(f * 255.0).astype(np.uint8)


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
  """An (H, W, C) image or (T, H, W, C) frames resized to (height, width): area averaging to
  shrink, bilinear to grow; returned as is when already that size. The project's one resize."""
  import cv2
  a = np.asarray(images)
  if a.shape[-3:-1] == (height, width):
    return a
  interp = cv2.INTER_AREA if a.shape[-3] > height else cv2.INTER_LINEAR
  if a.ndim == 3:
    return cv2.resize(np.ascontiguousarray(a), (width, height), interpolation=interp)
  return np.stack([cv2.resize(np.ascontiguousarray(f), (width, height), interpolation=interp)
                   for f in a])


def read_image(path: PathLike, max_side: int | None = MAX_IMAGE_SIDE) -> np.ndarray:
  """Reads an image file as (H, W, 3) uint8 RGB.

  EXIF orientation is applied; grayscale, palette, RGBA and 16-bit images are converted (see
  `to_rgb_uint8`); images with a side above `max_side` are downscaled.

  Raises:
    InputError: missing, empty, corrupt or unsupported file, or a decompression bomb.
  """
  from PIL import Image, ImageOps
  p = _check_file(path, "image")
  try:
    with Image.open(p) as img:
      if max_side is not None and img.format == "JPEG":
        img.draft("RGB", (max_side, max_side))  # decode JPEGs at a reduced scale: fast, small
      img = ImageOps.exif_transpose(img)
      if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
      elif img.mode == "CMYK":
        img = img.convert("RGB")
      elif img.mode in ("I;16", "I;16B", "I;16L"):
        img = img.convert("I")
      array = np.array(img)
  except Image.DecompressionBombError as e:
    raise InputError(p, f"image is too large to decode safely ({e})", "too_large") from None
  except (OSError, SyntaxError, ValueError) as e:
    # PIL raises UnidentifiedImageError (an OSError) for unknown data, OSError for truncation.
    raise InputError(p, f"not a readable image (corrupt or unsupported format: {e})",
                     "corrupt") from None
  image = to_rgb_uint8(array, str(p))
  h, w = image.shape[:2]
  if max_side is not None and max(h, w) > max_side:
    s = max_side / max(h, w)
    image = resize(image, max(1, round(h * s)), max(1, round(w * s)))
  return image


def write_image(path: PathLike, image: np.ndarray) -> None:
  """Writes an RGB uint8 image (format from the extension)."""
  from PIL import Image
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(to_rgb_uint8(image)).save(path)


# ------------------------------------------------------------------------------- ffmpeg helpers


def _run_ffmpeg(args: list[str], path: PathLike, timeout: float = _FFMPEG_TIMEOUT_S
                ) -> subprocess.CompletedProcess:
  """Runs the ffmpeg binary bundled with imageio-ffmpeg, its output and log captured."""
  import imageio_ffmpeg
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin"] + args
  try:
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          check=False)
  except subprocess.TimeoutExpired:
    raise InputError(path, f"ffmpeg did not finish decoding within {timeout:.0f} s",
                     "timeout") from None


def _ffmpeg_log(result, p, what: str, missing: str, missing_kind: str) -> str:
  """ffmpeg's log of a decode; raises when it could not open the input or find the stream."""
  text = result.stderr.decode("utf-8", "replace")
  if "Input #0" not in text:
    raise InputError(p, f"corrupt or unsupported {what} ({_ffmpeg_problem(result.stderr)})",
                     "corrupt")
  if "matches no streams" in text:
    raise InputError(p, missing, missing_kind)
  return text


def _ffmpeg_problem(log: bytes | str) -> str:
  """The most telling line of an ffmpeg error log, for messages."""
  text = log if isinstance(log, str) else log.decode("utf-8", "replace")
  lines = [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("Input #")]
  for key in ("moov atom not found", "Invalid data found", "partial file", "corrupt",
              "Could not find codec", "Invalid NAL", "Invalid argument", "error", "Error"):
    for line in lines:
      if key in line:
        return re.sub(r"^\[[^\]]*\]\s*", "", line)
  return lines[-1] if lines else "unknown ffmpeg error"


# Decoder messages that mean the file is damaged (truncated, broken packets), not just odd.
_DAMAGE_RE = re.compile(r"partial file|[Cc]orrupt|Invalid NAL|[Ee]rror while decoding|"
                        r"Invalid data found|Error splitting")


def _damage(result: subprocess.CompletedProcess) -> str | None:
  """The ffmpeg line saying that a decode hit a damaged file, or None."""
  for line in result.stderr.decode("utf-8", "replace").splitlines():
    # Only the decoders' and demuxers' "[component @ 0x...]" lines: others echo the file name.
    if line.startswith("[") and _DAMAGE_RE.search(line):
      return re.sub(r"^\[[^\]]*\]\s*", "", line.strip())
  return None


@dataclasses.dataclass
class MediaInfo:
  """What a media file's header says (first video and audio streams)."""
  duration: float | None
  has_video: bool
  has_audio: bool
  width: int | None = None
  height: int | None = None
  fps: float | None = None
  video_codec: str | None = None
  audio_codec: str | None = None


def probe(path: PathLike) -> MediaInfo:
  """Reads a media file's header: imageio-ffmpeg's `read_frames` metadata.

  Raises:
    InputError: missing, empty or unreadable (corrupt) file.
  """
  import imageio_ffmpeg
  p = _check_file(path, "media")
  reader = imageio_ffmpeg.read_frames(str(p))
  try:
    meta = next(reader)
  except OSError as e:  # no metadata: not a media file, or one without a video stream
    text = str(e)
    if "Input #0" not in text:
      raise InputError(p, f"corrupt or unsupported media file ({_ffmpeg_problem(text)})",
                       "corrupt") from None
    audio = re.search(r"Stream #0:\S* Audio: (\w+)", text)
    return MediaInfo(duration=None, has_video=False, has_audio=audio is not None,
                     audio_codec=audio and audio.group(1))
  finally:
    reader.close()
  width, height = meta["size"]
  return MediaInfo(duration=meta["duration"] or None, has_video=True,
                   has_audio="audio_codec" in meta, width=width, height=height,
                   fps=meta["fps"] or None, video_codec=meta["codec"],
                   audio_codec=meta.get("audio_codec"))


# ---------------------------------------------------------------------------------------- Video


def read_video(path: PathLike, fps: float | None = FPS, max_side: int | None = None,
               max_frames: int | None = None) -> np.ndarray:
  """Decodes a video's frames as (T, H, W, 3) uint8 RGB, T >= 1.

  Args:
    path: video file.
    fps: output frame rate (frames dropped or repeated by timestamp, ffmpeg's fps filter); None
      keeps the source's.
    max_side: if given, frames are downscaled so that their longer side is at most this.
    max_frames: if given, decode at most this many (output) frames.

  Raises:
    InputError: missing or empty file, corrupt container, no video stream, no decodable frame.
  """
  p = _check_file(path, "video")
  filters = []
  if fps is not None:
    filters.append(f"fps={fps:g}")
  if max_side is not None:
    filters.append(f"scale=w='min(iw,{max_side})':h='min(ih,{max_side})'"
                   ":force_original_aspect_ratio=decrease:force_divisible_by=2")
  args = ["-i", str(p), "-map", "0:v:0"]
  if filters:
    args += ["-vf", ",".join(filters)]
  if max_frames is not None:
    args += ["-frames:v", str(int(max_frames))]
  args += ["-an", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
  result = _run_ffmpeg(args, p)
  text = _ffmpeg_log(result, p, "video file", "file has no video stream", "no_video")
  # The output stream line carries the frame size after the filters (and after autorotation).
  out_section = text[text.find("Output #0"):] if "Output #0" in text else ""
  m = re.search(r"Video: rawvideo.*?, (\d+)x(\d+)", out_section)
  if not m or not result.stdout:
    if result.returncode:
      raise InputError(p, f"corrupt video: no frame could be decoded "
                          f"({_ffmpeg_problem(result.stderr)})", "corrupt")
    raise InputError(p, "video has no frames", "no_video")
  if (damage := _damage(result)):
    raise InputError(p, f"corrupt video: decoding failed part way ({damage})", "corrupt")
  w, h = int(m.group(1)), int(m.group(2))
  n = len(result.stdout) // (w * h * 3)
  if n == 0:
    raise InputError(p, "video has no frames", "no_video")
  data = bytearray(result.stdout)  # a writable buffer, so callers may draw on the frames
  return np.frombuffer(data, np.uint8, count=n * h * w * 3).reshape(n, h, w, 3)


class VideoWriter:
  """Streams RGB frames into an h264 mp4 (imageio-ffmpeg's `write_frames`), optionally with a mono
  waveform muxed as AAC.

  The file appears at `path` only when `close()` succeeds (it is written to a hidden temporary
  file in the same folder, then renamed). Frames of odd size are edge-padded to even sizes
  (yuv420p needs them). The audio is cut to the video's length.
  """

  def __init__(self, path: PathLike, fps: float = FPS, audio: np.ndarray | None = None,
               sample_rate: int = SAMPLE_RATE, crf: int = 18, preset: str = "medium"):
    self.path, self.fps, self.sample_rate = pathlib.Path(path), fps, sample_rate
    self.audio = None if audio is None else np.asarray(audio, np.float32).reshape(-1)
    self.crf, self.preset = crf, preset
    self.num_frames = 0
    self._gen = None
    self._size: tuple[int, int] | None = None
    self._tmp_dir: tempfile.TemporaryDirectory | None = None
    self._partial = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}-{id(self):x}"
                                        f"{self.path.suffix}")

  def _start(self, h: int, w: int) -> None:
    import imageio_ffmpeg
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._size = (h, w)
    audio_path, output_params = None, []
    if self.audio is not None:
      import soundfile
      self._tmp_dir = tempfile.TemporaryDirectory(prefix="pcavs_mux_")
      audio_path = os.path.join(self._tmp_dir.name, "audio.wav")
      soundfile.write(audio_path, np.clip(self.audio, -1.0, 1.0), self.sample_rate,
                      subtype="PCM_16")
      output_params += ["-b:a", "128k", "-shortest"]
    output_params += ["-preset", self.preset, "-crf", str(self.crf), "-movflags", "+faststart"]
    self._gen = imageio_ffmpeg.write_frames(
        str(self._partial), (w + w % 2, h + h % 2), fps=self.fps, codec="libx264",
        pix_fmt_out="yuv420p", quality=None, macro_block_size=2, ffmpeg_log_level="error",
        output_params=output_params, audio_path=audio_path,
        audio_codec=None if audio_path is None else "aac")
    self._gen.send(None)

  def write(self, frame: np.ndarray) -> None:
    """Appends one (H, W, 3) frame (uint8, or float in [0, 1])."""
    frame = to_rgb_uint8(frame, "frame")
    h, w = frame.shape[:2]
    if self._gen is None:
      self._start(h, w)
    elif (h, w) != self._size:
      raise ValueError(f"{self.path}: frame size {h}x{w} differs from the first frame's "
                       f"{self._size[0]}x{self._size[1]}")
    if h % 2 or w % 2:
      frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    try:
      self._gen.send(np.ascontiguousarray(frame))
    except OSError as e:
      self.abort()
      raise RuntimeError(f"{self.path}: ffmpeg failed to write the video "
                         f"({str(e).splitlines()[0]})") from None
    self.num_frames += 1

  def close(self) -> None:
    """Finishes the file and moves it into place; raises ValueError if no frame was written."""
    if self._gen is None:
      raise ValueError(f"{self.path}: no frames to write")
    self._gen.close()   # ffmpeg finishes the file and exits
    self._gen = None
    self._remove_audio()
    if not self._partial.is_file() or self._partial.stat().st_size == 0:
      self._partial.unlink(missing_ok=True)
      raise RuntimeError(f"{self.path}: ffmpeg failed to write the video")
    os.replace(self._partial, self.path)

  def abort(self) -> None:
    """Stops ffmpeg and removes the partial file; `path` is left as it was."""
    if self._gen is not None:
      with contextlib.suppress(KeyboardInterrupt):
        self._gen.throw(KeyboardInterrupt)   # imageio-ffmpeg kills ffmpeg without waiting
      self._gen = None
    self._remove_audio()
    self._partial.unlink(missing_ok=True)

  def _remove_audio(self) -> None:
    if self._tmp_dir is not None:
      self._tmp_dir.cleanup()
      self._tmp_dir = None

  def __enter__(self) -> "VideoWriter":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: float = FPS,
                audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE,
                crf: int = 18) -> int:
  """Writes RGB frames (uint8, or float in [0, 1]; an array or any iterable) as an h264 mp4,
  atomically, with `audio` (mono, [-1, 1]) as AAC; `crf` 18 is visually lossless.

  Returns:
    the number of frames written.
  """
  with VideoWriter(path, fps=fps, audio=audio, sample_rate=sample_rate, crf=crf) as writer:
    for frame in frames:
      writer.write(frame)
  return writer.num_frames


# ---------------------------------------------------------------------------------------- Audio


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
  """Band-limited polyphase resampling (scipy), float32 out."""
  if sr_in == sr_out:
    return np.asarray(wav, np.float32)
  from math import gcd

  from scipy.signal import resample_poly
  g = gcd(int(sr_in), int(sr_out))
  return resample_poly(np.asarray(wav, np.float64), sr_out // g, sr_in // g).astype(np.float32)


def _read_soundfile(p: pathlib.Path) -> tuple[np.ndarray, int]:
  import soundfile
  try:
    data, sr = soundfile.read(str(p), dtype="float32", always_2d=True)
  except (RuntimeError, soundfile.LibsndfileError, ValueError) as e:
    raise InputError(p, f"not a readable audio file (corrupt or unsupported: {e})",
                     "corrupt") from None
  return data.mean(axis=1), int(sr)  # downmix: channel mean


def read_audio(path: PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Reads the audio of a sound file or of a video as mono float32 at `sample_rate`.

  WAV/FLAC/OGG (any bit depth: 8/16/24/32-bit integer or float, any rate, any channel count) are
  read with soundfile, downmixed by averaging channels and resampled; other files (mp4, mp3, m4a,
  ...) are decoded with ffmpeg.

  Raises:
    InputError: missing, empty or corrupt file, no audio stream, or no samples.
  """
  p = _check_file(path, "audio")
  if p.suffix.lower() in _SOUNDFILE_EXTS:
    wav, sr = _read_soundfile(p)
    wav = resample(wav, sr, sample_rate)
  else:
    result = _run_ffmpeg(["-i", str(p), "-map", "0:a:0", "-vn", "-ac", "1", "-ar",
                          str(sample_rate), "-f", "f32le", "-"], p)
    text = _ffmpeg_log(result, p, "media file", "file has no audio track", "no_audio")
    if (damage := _damage(result)) or (result.returncode != 0 and not result.stdout):
      raise InputError(p, f"corrupt audio: decoding failed "
                          f"({damage or _ffmpeg_problem(result.stderr)})", "corrupt")
    wav = np.frombuffer(result.stdout, np.float32, count=len(result.stdout) // 4).copy()
  if wav.size == 0:
    raise InputError(p, "audio has no samples", "no_audio")
  if not np.all(np.isfinite(wav)):
    raise InputError(p, "audio contains NaN or infinite samples")
  return wav.astype(np.float32, copy=False)


def check_speech(wav: np.ndarray, name: PathLike | str, min_frames: int = 5,
                 sample_rate: int = SAMPLE_RATE) -> None:
  """Checks that a waveform can drive a clip: not silent, at least `min_frames` 25 fps frames.

  Raises:
    InputError: naming `name` and the problem.
  """
  wav = np.asarray(wav)
  need = min_frames * sample_rate // FPS
  if wav.size < need:
    raise InputError(name, f"audio is too short: {wav.size / sample_rate:.3f} s, "
                           f"{wav.size * FPS // sample_rate} frames at {FPS} fps "
                           f"(need at least {min_frames})", "too_short")
  peak = float(np.max(np.abs(wav)))
  if peak < SILENCE_PEAK:
    raise InputError(name, f"audio is silent (peak {peak:.1e})", "silent")
