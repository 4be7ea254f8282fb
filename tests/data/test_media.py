"""Media I/O: images, 25 fps video, 16 kHz audio, mp4 writing, and a clear error per bad input."""
import pathlib

import numpy as np
import pytest
import soundfile
from PIL import Image

from pcavs_jax.data import media
from pcavs_jax.data.media import InputError


def _tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
  t = np.arange(int(seconds * sr)) / sr
  wav = 0.5 * np.sin(2 * np.pi * freq * t)
  return wav if channels == 1 else np.stack([wav] * channels, axis=1)


def _frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
  """Frames whose mean brightness encodes the frame index (to check fps resampling)."""
  return np.stack([np.full((h, w, 3), 10 + 7 * i, np.uint8) for i in range(n)])


def _peak_hz(wav: np.ndarray, sr: int) -> float:
  spec = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
  return float(np.fft.rfftfreq(len(wav), 1 / sr)[spec.argmax()])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, pathlib.Path]:
  d = tmp_path_factory.mktemp("media")
  f = {}
  f["av"] = d / "corrupt_in_name_only.mp4"  # 1 s at 30 fps, 44.1 kHz AAC
  media.write_video(f["av"], _frames(30), fps=30, audio=_tone(1.0, 44100), sample_rate=44100)
  f["video_only"] = d / "video_only.mp4"
  media.write_video(f["video_only"], _frames(25))
  good = f["av"].read_bytes()
  f["truncated"] = d / "truncated.mp4"
  f["truncated"].write_bytes(good[: len(good) // 3])
  f["garbage"] = d / "garbage.mp4"
  f["garbage"].write_bytes(b"this is not an mp4 file" * 50)
  f["empty"] = d / "empty.mp4"
  f["empty"].write_bytes(b"")
  f["audio_only"] = d / "audio_only.m4a"
  media._run_ffmpeg(["-y", "-i", str(f["av"]), "-vn", "-c:a", "copy", str(f["audio_only"])],
                    f["audio_only"])
  f["no_frames"] = d / "no_frames.mp4"  # a valid container holding no frame
  media._run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "1",
                     "-frames:v", "0", "-c:v", "libx264", str(f["no_frames"])], f["no_frames"])
  return f


# ---------------------------------------------------------------------------------------- images


def test_read_image_rgb_gray_rgba_16bit(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / "rgb.png")
  np.testing.assert_array_equal(media.read_image(tmp_path / "rgb.png"), rgb)

  Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
  gray = media.read_image(tmp_path / "gray.png")
  assert gray.shape == (20, 30, 3) and gray.dtype == np.uint8
  np.testing.assert_array_equal(gray[..., 1], rgb[..., 0])

  rgba = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], axis=-1)
  rgba[0, 0, 3] = 0  # fully transparent: composited over white
  Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
  out = media.read_image(tmp_path / "rgba.png")
  assert out.shape == (20, 30, 3)
  np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
  np.testing.assert_array_equal(out[1:], rgb[1:])

  deep = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
  Image.fromarray(deep).save(tmp_path / "deep.png")
  out = media.read_image(tmp_path / "deep.png")
  np.testing.assert_allclose(out[..., 0], np.round(deep / 65535 * 255), atol=1)


def test_read_image_downscales_very_large(tmp_path):
  Image.new("RGB", (5000, 300), (200, 10, 10)).save(tmp_path / "wide.png")
  out = media.read_image(tmp_path / "wide.png")
  assert out.shape == (123, 2048, 3)
  Image.new("RGB", (4000, 3000), (10, 200, 10)).save(tmp_path / "big.jpg")
  assert media.read_image(tmp_path / "big.jpg", max_side=1000).shape == (750, 1000, 3)


@pytest.mark.parametrize("content,kind,words", [
    (None, "missing", "not found"),
    (b"", "corrupt", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "corrupt", "not a readable image"),
])
def test_read_image_errors(tmp_path, content, kind, words):
  path = tmp_path / "bad.png"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(InputError, match=words) as e:
    media.read_image(path)
  assert e.value.kind == kind and str(path) in str(e.value)


def test_truncated_jpeg_is_an_input_error(tmp_path):
  Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
  data = (tmp_path / "ok.jpg").read_bytes()
  (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
  with pytest.raises(InputError, match="cut.jpg"):
    media.read_image(tmp_path / "cut.jpg")


def test_to_rgb_uint8_float_and_bad_shapes():
  out = media.to_rgb_uint8(np.full((4, 4), 0.5, np.float32))
  assert out.shape == (4, 4, 3) and out[0, 0, 0] == 128
  with pytest.raises(InputError, match="not an image"):
    media.to_rgb_uint8(np.zeros((4, 4, 7)))
  with pytest.raises(InputError, match="NaN"):
    media.to_rgb_uint8(np.full((4, 4, 3), np.nan))


# ----------------------------------------------------------------------------------------- video


def test_read_video_resamples_to_25fps(files):
  frames = media.read_video(files["av"])
  assert frames.shape == (25, 48, 64, 3) and frames.dtype == np.uint8
  # Timestamp resampling keeps the order of the source frames and drops about 1 in 6.
  index = np.round((frames[:, 24, 32, 0].astype(float) - 10) / 7).astype(int)
  assert np.all(np.diff(index) >= 1) and index[0] == 0 and index[-1] >= 28
  assert media.read_video(files["av"], fps=None).shape[0] == 30
  assert media.read_video(files["av"], max_side=32).shape[1:3] == (24, 32)
  assert media.read_video(files["av"], max_frames=7).shape[0] == 7


@pytest.mark.parametrize("name,kind", [("truncated", "corrupt"), ("garbage", "corrupt"),
                                       ("empty", "corrupt"), ("audio_only", "no_video"),
                                       ("no_frames", "no_video")])
def test_read_video_errors(files, name, kind):
  with pytest.raises(InputError) as e:
    media.read_video(files[name])
  assert e.value.kind == kind and str(files[name]) in str(e.value)


def test_read_video_missing(tmp_path):
  with pytest.raises(InputError, match="video not found"):
    media.read_video(tmp_path / "nope.mp4")


def test_probe(files):
  info = media.probe(files["av"])
  assert info.has_video and info.has_audio and (info.width, info.height) == (64, 48)
  assert info.video_codec == "h264" and info.audio_codec == "aac"
  assert abs(info.duration - 1.0) < 0.1
  assert not media.probe(files["video_only"]).has_audio
  with pytest.raises(InputError, match="corrupt"):
    media.probe(files["garbage"])
  audio_only = media.probe(files["audio_only"])
  assert not audio_only.has_video and audio_only.has_audio and audio_only.audio_codec == "aac"


def test_write_video_with_audio_roundtrip(tmp_path):
  frames = np.random.default_rng(1).integers(0, 256, (10, 33, 45, 3), dtype=np.uint8)
  frames[:] = frames[:1]  # static content compresses well: the round trip stays close
  n = media.write_video(tmp_path / "o.mp4", frames, audio=_tone(0.4, 16000))
  assert n == 10
  info = media.probe(tmp_path / "o.mp4")
  assert (info.video_codec, info.audio_codec, info.fps) == ("h264", "aac", 25.0)
  back = media.read_video(tmp_path / "o.mp4")
  assert back.shape == (10, 34, 46, 3)  # padded to even sizes for yuv420p
  wav = media.read_audio(tmp_path / "o.mp4")
  assert abs(len(wav) - 6400) < 1600 and abs(_peak_hz(wav, 16000) - 440) < 10


def test_ffmpeg_runs_without_python_in_the_forked_child(tmp_path):
  """Writing and probing an mp4 in a process where JAX runs forks ffmpeg without Python code in the
  child (imageio-ffmpeg's default `preexec_fn` would run there): no deadlock risk, and none of
  JAX's fork warnings in a job's output."""
  import warnings

  import jax
  jax.devices()  # JAX's backends start, and with them its fork warning
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    media.write_video(tmp_path / "o.mp4", np.zeros((3, 8, 8, 3), np.uint8), audio=_tone(0.2, 16000))
    assert media.probe(tmp_path / "o.mp4").has_video
  assert not [w for w in caught if "fork" in str(w.message)]


def test_write_video_rejects_mismatched_frames(tmp_path):
  with pytest.raises(ValueError, match="differs"):
    media.write_video(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8),
                                           np.zeros((10, 8, 3), np.uint8)])
  with pytest.raises(ValueError, match="no frames"):
    media.write_video(tmp_path / "y.mp4", [])


def test_write_video_is_atomic(tmp_path):
  """The mp4 appears only when complete: a failure part way leaves neither it nor a partial."""
  (tmp_path / "old.mp4").write_bytes(b"previous")
  with pytest.raises(RuntimeError, match="stop"):
    with media.VideoWriter(tmp_path / "old.mp4", audio=_tone(0.4, 16000)) as w:
      w.write(np.zeros((8, 8, 3), np.uint8))
      raise RuntimeError("stop")
  assert (tmp_path / "old.mp4").read_bytes() == b"previous"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["old.mp4"]
  assert media.write_video(tmp_path / "old.mp4", np.zeros((3, 8, 8, 3), np.uint8)) == 3
  assert media.probe(tmp_path / "old.mp4").has_video
  assert sorted(p.name for p in tmp_path.iterdir()) == ["old.mp4"]


def test_resize_image_and_frames():
  img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  assert media.resize(img, 20, 30) is img
  assert media.resize(img, 10, 15).shape == (10, 15, 3)
  assert media.resize(np.stack([img] * 4), 40, 60).shape == (4, 40, 60, 3)
  flat = np.full((20, 30, 3), 77, np.uint8)
  np.testing.assert_array_equal(media.resize(flat, 7, 9), 77)


# ----------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("sr,subtype,channels", [
    (16000, "PCM_16", 1), (44100, "PCM_16", 2), (8000, "PCM_16", 1), (22050, "PCM_24", 1),
    (48000, "FLOAT", 2), (16000, "DOUBLE", 1), (11025, "PCM_U8", 1), (32000, "PCM_32", 6)])
def test_read_audio_wav_variants(tmp_path, sr, subtype, channels):
  path = tmp_path / f"a_{sr}_{subtype}_{channels}.wav"
  soundfile.write(path, _tone(0.5, sr, channels=channels), sr, subtype=subtype)
  wav = media.read_audio(path)
  assert wav.dtype == np.float32 and wav.ndim == 1
  assert abs(len(wav) - 8000) <= 1
  assert abs(_peak_hz(wav, 16000) - 440) < 5
  assert 0.3 < np.abs(wav[1000:-1000]).max() < 0.6  # the downmix keeps the level


def test_stereo_downmix_is_the_channel_mean(tmp_path):
  left, right = _tone(0.25, 16000, 300), _tone(0.25, 16000, 700)
  soundfile.write(tmp_path / "st.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
  np.testing.assert_allclose(media.read_audio(tmp_path / "st.wav"), (left + right) / 2,
                             atol=1e-6)


def test_read_audio_from_video(files):
  wav = media.read_audio(files["av"])
  assert abs(len(wav) - 16000) < 1200 and abs(_peak_hz(wav, 16000) - 440) < 5


@pytest.mark.parametrize("name,kind", [("video_only", "no_audio"), ("truncated", "corrupt"),
                                       ("garbage", "corrupt"), ("empty", "corrupt")])
def test_read_audio_errors(files, name, kind):
  with pytest.raises(InputError) as e:
    media.read_audio(files[name])
  assert e.value.kind == kind and str(files[name]) in str(e.value)


def test_read_audio_corrupt_and_missing_wav(tmp_path):
  (tmp_path / "bad.wav").write_bytes(b"RIFF" + b"\x00" * 40)
  with pytest.raises(InputError, match="bad.wav: not a readable audio file"):
    media.read_audio(tmp_path / "bad.wav")
  with pytest.raises(InputError, match="audio not found"):
    media.read_audio(tmp_path / "none.wav")


def test_check_speech():
  media.check_speech(_tone(0.3, 16000).astype(np.float32), "ok.wav")
  with pytest.raises(InputError, match="silent") as e:
    media.check_speech(np.zeros(16000, np.float32), "quiet.wav")
  assert e.value.kind == "silent" and "quiet.wav" in str(e.value)
  with pytest.raises(InputError, match="too short.*need at least 5"):
    media.check_speech(_tone(0.1, 16000), "short.wav")
