"""Real-video preprocessing on a mixed folder of good and bad videos: report, records, resume,
shards and the process pool."""
import argparse
import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest
from skimage import data

from data_pipeline import preprocess, video_clip, video_tree
from pcavs_jax.cli import preprocess as preprocess_cli
from pcavs_jax.data import records
from pcavs_jax.data import media

FRAMES = 30
SIZE = 160


def _talking(frames: int = FRAMES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """The astronaut's face drifting a few pixels, with a modulated tone plus noise."""
  img = cv2.resize(data.astronaut()[10:266, 100:356], (SIZE + 16, SIZE + 16))
  out = []
  for t in range(frames):
    dx = int(round(4 * np.sin(2 * np.pi * t / frames)))
    dy = int(round(2 * np.cos(2 * np.pi * t / frames)))
    out.append(img[8 + dy:8 + dy + SIZE, 8 + dx:8 + dx + SIZE])
  n = frames * 640
  tt = np.arange(n) / 16000
  rng = np.random.default_rng(seed)
  wav = 0.3 * np.sin(2 * np.pi * 220 * tt) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * tt))
  return np.stack(out), (wav + 0.03 * rng.standard_normal(n)).astype(np.float32)


GOOD = ["vox2_dev/id00001/vidA/00001.mp4", "vox2_dev/id00001/vidB/00002.mp4",
        "vox2_dev/id00002/vidC/00001.mp4", "vox2_test/id09999/vidZ/00001.mp4",
        "lrw/ABOUT/train/ABOUT_00001.mp4", "lrw/ABOUT/val/ABOUT_00002.mp4"]
BAD = {  # path -> reason in the report
    "vox2_dev/id00003/vidD/corrupt.mp4": "corrupt",
    "vox2_dev/id00003/vidD/garbage.mp4": "corrupt",
    "vox2_dev/id00003/vidD/empty.mp4": "corrupt",
    "vox2_dev/id00003/vidD/no_audio.mp4": "no_audio",
    "vox2_dev/id00003/vidD/no_face.mp4": "no_face",
    "vox2_dev/id00003/vidD/short.mp4": "too_short",
    "vox2_dev/id00003/vidD/silent.mp4": "silent",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("videos")
  frames, wav = _talking()

  def write(rel, fr, audio=None, fps=25):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    media.write_video(path, fr, fps=fps, audio=audio)

  for i, rel in enumerate(GOOD):
    fr = frames if i % 2 == 0 else frames[::-1]
    write(rel, fr, wav, fps=30 if rel.endswith("vidC/00001.mp4") else 25)  # one at 30 fps
  bad = "vox2_dev/id00003/vidD/"
  write(bad + "no_audio.mp4", frames)
  write(bad + "short.mp4", frames[:6], wav[:6 * 640])
  write(bad + "silent.mp4", frames, np.zeros_like(wav))
  noise = np.random.default_rng(0).integers(90, 160, frames.shape, dtype=np.uint8)
  write(bad + "no_face.mp4", noise, wav)
  good = (root / GOOD[0]).read_bytes()
  (root / (bad + "corrupt.mp4")).write_bytes(good[: len(good) // 2])
  (root / (bad + "garbage.mp4")).write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 300)
  (root / (bad + "empty.mp4")).write_bytes(b"")
  (root / "vox2_dev/id00003/vidD/notes.txt").write_text("not a video: ignored")
  return root


@pytest.fixture(scope="module")
def processed(tree, tmp_path_factory) -> tuple[pathlib.Path, dict]:
  out = tmp_path_factory.mktemp("records")
  summary = preprocess.preprocess_videos(tree, out, progress=False)
  return out, summary


def _report(out: pathlib.Path) -> dict[str, dict]:
  """path -> last report line."""
  return {line["path"]: line for line in preprocess.read_report(out)}


def _clip_ids(out: pathlib.Path) -> list[str]:
  return sorted(c.clip_id for c in records.read_clips(out))


def test_describe_layouts():
  assert video_tree.describe("vox2_dev/mp4/id00012/abc/00001.mp4") == ("id00012", "train")
  assert video_tree.describe("vox2_test/mp4/id00012/abc/00001.mp4") == ("id00012", "test")
  assert video_tree.describe("id00012/abc/00001.mp4") == ("id00012", "train")
  assert video_tree.describe("lipread_mp4/ABOUT/val/ABOUT_00003.mp4") == ("ABOUT", "val")
  assert video_tree.describe("ABOUT/test/ABOUT_00003.mp4") == ("ABOUT", "test")
  assert video_tree.describe("alice/talk.mp4") == ("alice", "train")
  assert video_tree.describe("talk.mp4", split="test") == ("talk", "test")


def test_mixed_folder_report(processed):
  out, summary = processed
  assert summary["videos"] == len(GOOD) + len(BAD)
  assert summary["written"] == len(GOOD)
  expected = {}
  for reason in BAD.values():
    expected[reason] = expected.get(reason, 0) + 1
  assert summary["skipped"] == expected
  report = _report(out)
  assert set(report) == set(GOOD) | set(BAD)
  for rel in GOOD:
    assert report[rel]["status"] == "ok"
  for rel, reason in BAD.items():
    line = report[rel]
    assert line["status"] == "skipped" and line["reason"] == reason and line["detail"]


def test_records_hold_aligned_clips(processed):
  out, _ = processed
  manifest = records.read_manifest(out)
  assert {s: e["clips"] for s, e in manifest["splits"].items()} == {"train": 4, "test": 1,
                                                                      "val": 1}
  labels = json.loads((out / video_tree.LABELS_FILE).read_text())
  assert labels == {"ABOUT": 0, "id00001": 1, "id00002": 2, "id00003": 3, "id09999": 4}
  clips = {c.clip_id: c for c in records.read_clips(out)}
  assert sorted(clips) == sorted(g[:-4] for g in GOOD)
  for c in clips.values():
    c.validate()
    assert c.frames.shape[1:] == (224, 224, 3)
    assert c.label == labels[c.identity] and c.source in GOOD
    assert c.audio.shape == (c.num_frames * 640,)
    assert c.mel.shape == (4 * c.num_frames + 7, 80)
  assert clips["vox2_dev/id00001/vidA/00001"].num_frames == FRAMES
  # 30 source frames at 30 fps are 1 s: 25 frames at 25 fps.
  assert abs(clips["vox2_dev/id00002/vidC/00001"].num_frames - 25) <= 1
  assert clips["lrw/ABOUT/val/ABOUT_00002"].identity == "ABOUT"
  # The official alignment: every frame's inner-mouth centre (60-67) moved onto (112, 120), up
  # to the smoothing, and every frame's 68 landmarks kept in the record (aligned-crop pixels).
  lm = clips["vox2_dev/id00001/vidA/00001"].truth[video_clip.LANDMARKS_KEY]
  assert lm.shape == (FRAMES, 68, 2) and np.isfinite(lm).all()
  assert np.abs(lm[:, 60:68].mean(1) - (112, 120)).max() < 2.0
  report = _report(out)
  assert all(report[rel]["face_seconds"] > 0 for rel in GOOD)


def test_resume_skips_done_and_keeps_records(processed, tree):
  out, _ = processed
  before = _clip_ids(out)
  files = sorted(p.name for p in out.glob("*/*.tfrecord"))
  summary = preprocess.preprocess_videos(tree, out, progress=False)
  assert summary["written"] == 0 and summary["skipped"] == {}
  assert summary["done_before"] == len(GOOD) and summary["failed_before"] == len(BAD)
  assert _clip_ids(out) == before
  assert sorted(p.name for p in out.glob("*/*.tfrecord")) == files


def test_resume_after_a_crash(tree, tmp_path, monkeypatch):
  """Killed while writing the second record file: a re-run writes each clip exactly once."""
  subset = tmp_path / "videos"
  for rel in GOOD[:3] + ["vox2_dev/id00003/vidD/no_audio.mp4"]:
    (subset / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tree / rel, subset / rel)
  out = tmp_path / "out"
  real_write = records.write_clips
  calls = []

  def crashing_write(clips, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      next(iter(clips))
      raise KeyboardInterrupt("killed")
    return real_write(clips, *args, **kwargs)

  monkeypatch.setattr(records, "write_clips", crashing_write)
  with pytest.raises(KeyboardInterrupt):
    preprocess.preprocess_videos(subset, out, frames_per_file=1, progress=False)
  monkeypatch.setattr(records, "write_clips", real_write)
  assert len(_clip_ids(out)) == 1
  summary = preprocess.preprocess_videos(subset, out, frames_per_file=1, progress=False)
  assert summary["done_before"] == 1 and summary["written"] == 2
  assert _clip_ids(out) == sorted(g[:-4] for g in GOOD[:3])
  # The number of the file being written when killed is not reused.
  assert sorted(p.name[:14] for p in out.glob("*/*.tfrecord")) == [
      "real_all_00000", "real_all_00002", "real_all_00003"]

  # Killed after a file was committed but before its 'ok' lines: the manifest settles it.
  report = preprocess.report_path(out)
  lines = [l for l in report.read_text().splitlines() if '"status": "ok"' not in l]
  report.write_text("\n".join(lines) + "\n")
  summary = preprocess.preprocess_videos(subset, out, progress=False)
  assert summary["written"] == 0 and summary["done_before"] == 3
  assert _clip_ids(out) == sorted(g[:-4] for g in GOOD[:3])


def test_shards_are_disjoint_and_complete(tree):
  rels = [t.rel for t in video_tree.find_videos(tree)]
  assert len(rels) == len(GOOD) + len(BAD)
  many = [f"id{i:05d}/v/{j}.mp4" for i in range(50) for j in range(20)]
  for n in (1, 3, 7):
    parts = [[r for r in many if video_tree.in_shard(r, (i, n))] for i in range(n)]
    assert sorted(sum(parts, [])) == sorted(many)
    assert all(len(p) > len(many) / n / 2 for p in parts)
  with pytest.raises(ValueError, match="i/n"):
    video_tree.parse_shard("3/3")
  assert video_tree.parse_shard("1/4") == (1, 4)


def test_shard_runs_and_pool(tree, tmp_path):
  """Two shards (one through a pool of 2 workers) into one folder: every good clip once."""
  subset = tmp_path / "videos"
  chosen = GOOD[:4] + ["vox2_dev/id00003/vidD/silent.mp4",
                       "vox2_dev/id00003/vidD/garbage.mp4"]
  for rel in chosen:
    (subset / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tree / rel, subset / rel)
  out = tmp_path / "out"
  s0 = preprocess.preprocess_videos(subset, out, shard=(0, 2), workers=2, progress=False)
  s1 = preprocess.preprocess_videos(subset, out, shard=(1, 2), progress=False)
  assert s0["videos"] + s1["videos"] == len(chosen) and min(s0["videos"], s1["videos"]) > 0
  assert s0["written"] + s1["written"] == 4
  assert _clip_ids(out) == sorted(g[:-4] for g in GOOD[:4])
  reports = sorted(p.name for p in out.glob("report*.jsonl"))
  assert reports == ["report_s0000of0002.jsonl", "report_s0001of0002.jsonl"]
  paths = [l["path"] for l in preprocess.read_report(out) if l["status"] != "pending"]
  assert sorted(paths) == sorted(chosen)  # one final line per video


def test_cli(tree, tmp_path, capsys):
  parser = argparse.ArgumentParser()
  preprocess_cli.register(parser.add_subparsers())
  only = tmp_path / "videos"
  (only / "spk").mkdir(parents=True)
  shutil.copy(tree / GOOD[0], only / "spk" / "a.mp4")
  args = parser.parse_args(["preprocess", "--videos", str(only), "--out", str(tmp_path / "o"),
                            "--resolution", "64"])
  assert args.func(args) == 0
  clip = next(records.read_clips(tmp_path / "o"))
  assert clip.frames.shape[1:] == (64, 64, 3) and clip.identity == "spk"
  assert "written" in capsys.readouterr().out
  bad = parser.parse_args(["preprocess", "--videos", str(tmp_path / "none"), "--out",
                           str(tmp_path / "o2")])
  assert bad.func(bad) == 2
  assert "videos folder not found" in capsys.readouterr().err
  bad = parser.parse_args(["preprocess", "--videos", str(only), "--out", str(tmp_path / "o3"),
                           "--shard", "2/2"])
  assert bad.func(bad) == 2


def test_real_and_synthtalk_clips_load_through_the_same_pipeline(processed, tmp_path):
  """Preprocessed real clips and SynthTalk clips give batches of one structure and shape."""
  from data_pipeline.synthtalk import generate
  from pcavs_jax.data import input_pipeline
  synth = tmp_path / "synthtalk"
  records.write_clips(generate.generate_clips(0, [0, 1], 2, 12, 64), synth, "train")
  cfg = input_pipeline.data_config()
  cfg.resolution, cfg.batch_size, cfg.shuffle_buffer, cfg.reference_min_gap = 64, 4, 4, 2
  batches = {}
  for name, data_dir in (("real", processed[0]), ("synthtalk", synth)):
    ds = input_pipeline.create_train_dataset(cfg, str(data_dir), seed=0, local_device_count=1)
    batches[name] = next(input_pipeline.numpy_iterator(ds))
  real, synthetic = batches["real"], batches["synthtalk"]
  for key in ("target", "reference", "pose_source", "mel", "label"):
    assert real[key].shape == synthetic[key].shape, key
    assert real[key].dtype == synthetic[key].dtype, key
  assert real["target"].shape == (1, 4, 1, 64, 64, 3)
  # Per-frame ground truth where known: SynthTalk's exact codes; real clips keep their 68
  # landmarks (record pixels).
  assert synthetic["truth"] and list(real["truth"]) == [video_clip.LANDMARKS_KEY]
  assert real["truth"][video_clip.LANDMARKS_KEY].shape[-2:] == (68, 2)
