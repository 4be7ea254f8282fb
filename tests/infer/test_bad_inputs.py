"""Every bad input of issue 6: a clear error naming the input and the problem in single mode,
and a recorded failure (while the other jobs finish) in batch mode.

Inputs that can be converted without guessing (grayscale / RGBA / 16-bit images, a very large
photo, stereo, 8 kHz, 24-bit or float audio, a pose video shorter than the audio) are converted,
and the conversion is said in the job's notes; `--strict-pose-length` turns the short pose video
into an error instead.
"""
import argparse
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

import inference_testutil as util
from pcavs_jax import infer
from pcavs_jax.cli import generate as generate_cli
from pcavs_jax.data import media
from pcavs_jax.data.media import InputError


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, pathlib.Path]:
  d = tmp_path_factory.mktemp("bad")
  f = {"missing_png": d / "missing.png", "missing_wav": d / "missing.wav"}
  photo = util.astronaut()
  f["photo"] = util.write_astronaut(d / "photo.png")
  f["wav"] = util.write_wav(d / "speech.wav", seconds=0.4)
  f["corrupt_png"] = d / "corrupt.png"
  f["corrupt_png"].write_bytes(b"this is not a png" * 20)
  media.write_image(d / "full.jpg", photo)
  f["truncated_jpg"] = d / "truncated.jpg"
  f["truncated_jpg"].write_bytes((d / "full.jpg").read_bytes()[:4000])
  f["no_face"] = d / "no_face.png"
  ramp = np.linspace(0, 255, 300)[None, :, None] * np.ones((300, 1, 3))
  media.write_image(f["no_face"], ramp.astype(np.uint8))
  gray = np.asarray(Image.fromarray(photo).convert("L"))
  f["gray"] = d / "gray.png"
  Image.fromarray(gray).save(f["gray"])
  f["rgba"] = d / "rgba.png"
  Image.fromarray(np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)],
                                 -1)).save(f["rgba"])
  f["gray16"] = d / "gray16.png"
  Image.fromarray(gray.astype(np.uint16) * 257).save(f["gray16"])
  assert Image.open(f["gray16"]).mode.startswith("I;16")
  import cv2
  f["large"] = d / "large.jpg"
  media.write_image(f["large"], cv2.resize(photo, (4800, 4800), interpolation=cv2.INTER_LINEAR))
  f["bomb"] = d / "bomb.png"   # 196 Mpixel of nothing in a small file: a decompression bomb
  Image.new("1", (14000, 14000)).save(f["bomb"])
  # Videos.
  util.write_pose_video(d / "talking.mp4", frames=10, audio_seconds=0.4)
  good = (d / "talking.mp4").read_bytes()
  f["truncated_mp4"] = d / "truncated.mp4"
  f["truncated_mp4"].write_bytes(good[:len(good) // 3])
  f["garbage_mp4"] = d / "garbage.mp4"
  f["garbage_mp4"].write_bytes(b"not an mp4 at all" * 64)
  f["no_frames_mp4"] = d / "no_frames.mp4"
  media._run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "1",
                     "-frames:v", "0", "-c:v", "libx264", str(f["no_frames_mp4"])],
                    f["no_frames_mp4"])
  f["silent_video"] = util.write_pose_video(d / "video_only.mp4", frames=10)
  f["short_pose"] = util.write_pose_video(d / "short_pose.mp4", frames=3)
  # Audio.
  f["silent_wav"] = util.write_wav(d / "silent.wav", 0.4, silent=True)
  f["short_wav"] = util.write_wav(d / "short.wav", 0.15)  # 3 frames
  f["stereo_wav"] = util.write_wav(d / "stereo.wav", 0.4, channels=2)
  f["wav_8k"] = util.write_wav(d / "8k.wav", 0.4, sr=8000)
  f["wav_24"] = util.write_wav(d / "pcm24.wav", 0.4, subtype="PCM_24")
  f["wav_float"] = util.write_wav(d / "float.wav", 0.4, subtype="FLOAT")
  f["garbage_wav"] = d / "garbage.wav"
  f["garbage_wav"].write_bytes(b"RIFF" + b"\x00" * 100)
  f["a_folder"] = d / "a_folder"
  f["a_folder"].mkdir()
  return f


# (id, job fields: role -> file key, expected kind or None when accepted, words of the message
# or of the note).
CASES = [
    ("missing_image", {"reference": "missing_png"}, "missing", "reference not found"),
    ("corrupt_image", {"reference": "corrupt_png"}, "corrupt", "not a readable image"),
    ("truncated_image", {"reference": "truncated_jpg"}, "corrupt", "not a readable image"),
    ("image_without_face", {"reference": "no_face"}, "no_face", "no face found"),
    ("decompression_bomb", {"reference": "bomb"}, "too_large", "too large"),
    ("corrupt_pose_mp4", {"pose": "truncated_mp4"}, "corrupt", "corrupt"),
    ("garbage_pose_mp4", {"pose": "garbage_mp4"}, "corrupt", "corrupt"),
    ("pose_video_without_frames", {"pose": "no_frames_mp4"}, "no_video", "no video"),
    ("audio_missing", {"audio": "missing_wav"}, "missing", "audio not found"),
    ("audio_is_a_folder", {"audio": "a_folder"}, "missing", "not a file"),
    ("audio_corrupt", {"audio": "garbage_wav"}, "corrupt", "not a readable audio file"),
    ("audio_silent", {"audio": "silent_wav"}, "silent", "audio is silent"),
    ("audio_shorter_than_5_frames", {"audio": "short_wav"}, "too_short", "need at least 5"),
    ("video_without_audio_track", {"audio": "silent_video"}, "no_audio", "no audio track"),
    ("corrupt_audio_mp4", {"audio": "garbage_mp4"}, "corrupt", "corrupt"),
    ("grayscale_image", {"reference": "gray"}, None, "grayscale image converted"),
    ("rgba_image", {"reference": "rgba"}, None, "RGBA"),
    ("16bit_image", {"reference": "gray16"}, None, "16-bit image converted"),
    ("very_large_image", {"reference": "large"}, None, "downscaled"),
    ("stereo_audio", {"audio": "stereo_wav"}, None, "2 channels downmixed"),
    ("8khz_audio", {"audio": "wav_8k"}, None, "resampled from 8000 Hz"),
    ("24bit_audio", {"audio": "wav_24"}, None, "PCM_24"),
    ("float_audio", {"audio": "wav_float"}, None, "FLOAT"),
    ("pose_video_shorter_than_audio", {"pose": "short_pose"}, None, "forwards and backwards"),
]


def _job(files, fields: dict[str, str]) -> dict[str, str]:
  job = {"reference": str(files["photo"]), "audio": str(files["wav"])}
  job.update({role: str(files[key]) for role, key in fields.items()})
  return job


@pytest.mark.parametrize("case,fields,kind,words", CASES, ids=[c[0] for c in CASES])
def test_single_mode(case, fields, kind, words, files, driver, tmp_path):
  job = _job(files, fields)
  out = tmp_path / f"{case}.mp4"
  if kind is None:
    rec = infer.generate(driver, job["reference"], job["audio"], out, job.get("pose"),
                         progress=False)
    assert rec["status"] == "ok" and media.probe(out).has_audio
    assert any(words in n for n in rec["notes"]), rec["notes"]
    return
  with pytest.raises(InputError) as info:
    infer.generate(driver, job["reference"], job["audio"], out, job.get("pose"),
                   progress=False)
  bad = next(iter(fields.values()))
  assert info.value.kind == kind
  assert str(files[bad]) in str(info.value) and words in str(info.value), str(info.value)
  assert not out.exists() and not list(tmp_path.glob(".*"))


def test_strict_pose_length_refuses_a_short_pose_video(files, driver, tmp_path):
  with pytest.raises(InputError, match=r"short_pose.mp4: pose source has 3 frames .* shorter "
                                       r"than the audio's 10 \(--strict-pose-length\)"):
    infer.generate(driver, files["photo"], files["wav"], tmp_path / "o.mp4",
                   files["short_pose"], strict_pose_length=True, progress=False)


def test_cli_single_mode_prints_the_input_and_the_problem(checkpoint, files, tmp_path, capsys):
  parser = argparse.ArgumentParser()
  generate_cli.register(parser.add_subparsers())
  args = parser.parse_args(["generate", "--checkpoint", str(checkpoint), "--reference",
                            str(files["no_face"]), "--audio", str(files["wav"]), "--out",
                            str(tmp_path / "o.mp4")])
  assert args.func(args) == 2
  assert f"error: {files['no_face']}: no face found" in capsys.readouterr().err
  args = parser.parse_args(["generate", "--checkpoint", str(checkpoint), "--reference",
                            str(files["photo"]), "--out", str(tmp_path / "o.mp4")])
  assert args.func(args) == 2
  assert "needs --audio" in capsys.readouterr().err


def test_batch_mode_records_each_failure_and_finishes_the_rest(files, driver, tmp_path):
  rows = [{"name": "good", "reference": str(files["photo"]), "audio": str(files["wav"])}]
  rows += [{"name": case, **_job(files, fields)} for case, fields, _, _ in CASES]
  lines = [json.dumps(r) for r in rows]
  # Manifest rows with missing columns, unreadable paths and bad JSON.
  lines += ['{"name": "no_audio_column", "reference": "%s"}' % files["photo"],
            '{"name": "empty_reference", "reference": "", "audio": "%s"}' % files["wav"],
            '{"name": "unreadable_paths", "reference": "/no/such/dir/face.png", '
            '"audio": "/no/such/dir/speech.wav"}',
            '{"name": "broken json"']
  manifest = tmp_path / "jobs.jsonl"
  manifest.write_text("\n".join(lines) + "\n")
  out = tmp_path / "out"
  summary = infer.generate_batch(driver, manifest, out, progress=False)
  by = {r["name"]: r for r in summary["results"]}
  assert by["good"]["status"] == "ok" and media.probe(out / "good.mp4").has_audio
  for case, fields, kind, words in CASES:
    rec = by[case]
    if kind is None:
      assert rec["status"] == "ok", rec
      assert any(words in n for n in rec["notes"]) and (out / f"{case}.mp4").exists()
    else:
      assert rec["status"] == "failed" and rec["reason"] == kind, rec
      assert str(files[next(iter(fields.values()))]) in rec["message"] and words in rec["message"]
  assert by["no_audio_column"]["status"] == "failed"
  assert "missing audio" in by["no_audio_column"]["detail"]
  assert "missing reference" in by["empty_reference"]["detail"]
  assert by["unreadable_paths"]["reason"] == "missing"
  assert "/no/such/dir/speech.wav" in by["unreadable_paths"]["message"]
  broken = by[f"row{len(lines)}"]  # unnamed: called after its line
  assert broken["status"] == "failed" and "JSON" in broken["detail"]
  written = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
  assert len(written) == len(summary["results"]) == len(rows) + 4
  assert not list(out.glob(".*"))
