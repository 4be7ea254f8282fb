"""SynthTalk: determinism, exact re-rendering, phoneme-driven mouths, audio-free pose, the
analyzer's accuracy, and the cross-driven scoring against its baselines."""
import argparse
import dataclasses
import json
import warnings

import cv2
import numpy as np
import pytest

from data_pipeline.synthtalk import generate, speech
from pcavs_jax.data.synthtalk import analyzer
from pcavs_jax.data.synthtalk import eval_sets
from pcavs_jax.data.synthtalk import render
from pcavs_jax.evaluate import scoring

RES = 64


@pytest.fixture(scope="module")
def clip():
  return generate.make_clip(seed=3, identity=1, clip=0, num_frames=8, resolution=RES)


@pytest.fixture(scope="module")
def eval_set():
  test_ids = [5, 6, 7]
  clips = list(generate.generate_clips(11, test_ids, 2, 16, RES))
  return eval_sets.build_eval_set(clips, num_triples=3)


def test_same_seed_same_bytes(clip):
  again = generate.make_clip(seed=3, identity=1, clip=0, num_frames=8, resolution=RES)
  assert again.frames.tobytes() == clip.frames.tobytes()
  assert again.audio.tobytes() == clip.audio.tobytes()
  assert again.mel.tobytes() == clip.mel.tobytes()
  for k in clip.truth:
    assert again.truth[k].tobytes() == clip.truth[k].tobytes()
  other = generate.make_clip(seed=4, identity=1, clip=0, num_frames=8, resolution=RES)
  assert other.frames.tobytes() != clip.frames.tobytes()


def test_clip_format(clip):
  clip.validate()
  assert clip.frames.shape == (8, RES, RES, 3)
  assert clip.audio.shape == (8 * 640,) and clip.audio.dtype == np.float32
  assert clip.mel.shape[0] >= 32 and clip.mel.shape[1] == 80
  assert set(generate.TRUTH_KEYS) <= set(clip.truth)
  assert all(v.dtype == np.float32 for v in clip.identity_params.values())
  assert clip.identity == "synth_0001" and clip.label == 1


def test_truth_rerenders_bit_exactly(clip):
  assert np.array_equal(render.render_frames(clip.identity_params, clip.truth, RES), clip.frames)
  t = 5
  one = render.render_frame(clip.identity_params, *(clip.truth[k][t] for k in
                                                    render.POSE_KEYS + render.MOUTH_KEYS),
                            resolution=RES)
  assert np.array_equal(one, clip.frames[t])


def test_stored_records_rerender(clip, tmp_path):
  from pcavs_jax.data import records
  records.write_clips([clip], tmp_path, "train", jpeg_quality=95)
  (back,) = list(records.read_clips(tmp_path, "train"))
  redrawn = render.render_frames(back.identity_params, back.truth, RES)
  assert np.array_equal(redrawn, clip.frames)
  # The records hold JPEG frames: the re-render, encoded the same way, gives the same pixels.
  jpeg = [cv2.imdecode(cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1],
                       cv2.IMREAD_COLOR)[..., ::-1] for f in redrawn]
  assert np.array_equal(np.stack(jpeg), back.frames)


def test_pose_twins_draw_the_clip_on_other_identities(tmp_path):
  """Each training clip's twin is its own pose and mouth on another identity, a different one
  per clip; the twin frames survive the records."""
  from pcavs_jax.data import records
  ids = [0, 1, 2]
  assert [generate.pose_twin(ids, 0, c) for c in range(3)] == [1, 2, 1]
  assert generate.pose_twin([4], 4, 0) is None
  clips = list(generate.generate_clips(2, ids, 2, 6, RES, pose_twins=True))
  for c in clips:
    twin = generate.pose_twin(ids, c.label, int(c.clip_id[-3:]))
    assert twin != c.label
    assert np.array_equal(
        c.pose_frames, render.render_frames(generate.identity_params(2, twin), c.truth, RES))
    assert np.abs(c.pose_frames.astype(int) - c.frames).mean() > 5
  assert generate.make_clip(2, 0, 0, 6, RES).pose_frames is None
  with pytest.raises(ValueError, match="pose_frames must be"):
    dataclasses.replace(clips[0], pose_frames=clips[0].pose_frames[:3]).validate()
  # `--pose-twins` draws them for the training split only; they survive the records.
  from data_pipeline.synthtalk.write import SynthTalkSettings, write_synthtalk
  write_synthtalk(tmp_path, SynthTalkSettings(identities=3, clips_per_identity=1, resolution=RES,
                                              frames=6, seed=2, test_fraction=0.2,
                                              heldout_clips=0, baselines=False, pose_twins=True))
  train = list(records.read_clips(tmp_path, "train"))
  assert len(train) == 2 and all(c.pose_frames is not None for c in train)
  assert all(c.pose_frames is None for c in records.read_clips(tmp_path, "test"))
  first = generate.make_clip(2, train[0].label, 0, 6, RES, pose_twin=train[1].label)
  assert np.abs(train[0].pose_frames.astype(int) - first.pose_frames).mean() < 2.0  # JPEG


def test_frontal_face_is_aligned():
  params = generate.identity_params(0, 2)
  for res in (64, 224):
    labels, _, (rows, cols) = render.label_map(params, 0, 0, 0, 0, 0, 0.0, 0.5, res, 2)
    ys, xs = np.nonzero(np.isin(labels, (render.SCLERA, render.IRIS, render.PUPIL)))
    x = (xs + cols.start + 0.5) / (2 * res) * 224
    y = (ys + rows.start + 0.5) / (2 * res) * 224
    left, right = x < 112, x >= 112
    for side, cx in ((left, 87), (right, 137)):
      assert abs(x[side].mean() - cx) < 1.5 and abs(y[side].mean() - 59) < 1.5
    ys, xs = np.nonzero(labels == render.LIPS)
    assert abs((xs + cols.start + 0.5).mean() / (2 * res) * 224 - 112) < 1.5
    assert abs((ys + rows.start + 0.5).mean() / (2 * res) * 224 - 120) < 1.5


def test_pose_is_a_3d_rotation():
  """Yaw foreshortens the far eye and reveals the near one: not a 2-D shift of a sprite."""
  params = generate.identity_params(0, 2)

  def eye_areas(yaw):
    labels, _, (_, cols) = render.label_map(params, yaw, 0, 0, 0, 0, 0.0, 0.5, 128, 1)
    eye = np.isin(labels, (render.SCLERA, render.IRIS, render.PUPIL))
    xs = np.nonzero(eye)[1] + cols.start
    mid = xs.mean()
    return (xs < mid).sum(), (xs >= mid).sum()

  left, right = eye_areas(0)
  assert abs(left / right - 1) < 0.05
  left, right = eye_areas(25)
  assert left / right > 1.25  # turned to the image's right: the right eye goes edge-on


def test_vowel_not_loudness_decides_mouth():
  params = generate.identity_params(0, 0)
  n = 1600  # 100 ms
  segs = [speech.Segment("sil", 0, n, 0.0), speech.Segment("a", n, 3 * n, 0.8),
          speech.Segment("sil", 4 * n, n, 0.0), speech.Segment("i", 5 * n, 3 * n, 0.8),
          speech.Segment("sil", 8 * n, n, 0.0), speech.Segment("a", 9 * n, 3 * n, 0.4),
          speech.Segment("sil", 12 * n, 4 * n, 0.0)]
  wav = speech.synthesize(segs, params, np.random.default_rng(0), 16 * n)
  rms = lambda s: float(np.sqrt(np.mean(wav[s.start + 800:s.start + s.length - 800] ** 2)))
  assert abs(rms(segs[1]) / rms(segs[3]) - 1) < 0.15          # /a/ and /i/ equally loud
  assert abs(rms(segs[5]) / rms(segs[1]) - 0.5) < 0.1          # the quiet /a/
  mouth_open, mouth_width = speech.mouth_track(segs, 40)
  frame = lambda s: (s.start + s.length // 2) // 640
  a, i, quiet_a = (frame(s) for s in (segs[1], segs[3], segs[5]))
  assert mouth_open[a] - mouth_open[i] > 0.5 and mouth_width[i] - mouth_width[a] > 0.3
  assert mouth_open[quiet_a] == mouth_open[a] and mouth_width[quiet_a] == mouth_width[a]
  assert mouth_open[frame(segs[6]) + 2] == 0.0                 # closed in silence
  # The content differs in the spectrum: /i/ has its second formant near 2.3 kHz, /a/ near 1.1.
  freqs = np.fft.rfftfreq(3 * n - 1600, 1 / 16000)
  def high_share(s):
    power = np.abs(np.fft.rfft(wav[s.start + 800:s.start + s.length - 800])) ** 2
    return float(power[(freqs > 1800) & (freqs < 3500)].sum() / power.sum())
  assert high_share(segs[3]) > 3 * high_share(segs[1])


def test_phoneme_durations():
  segs = speech.sample_phonemes(np.random.default_rng(1), 16000 * 20)
  ms = np.array([s.length / 16 for s in segs])
  assert ms.min() >= 60 and ms.max() <= 300
  assert {s.phoneme for s in segs} >= set(speech.VOWELS) | {"sil"}


def test_pose_independent_of_audio():
  seed, frames = 5, 50
  params = generate.identity_params(seed, 0)
  yaw_speed, loud, mouth, yaw = [], [], [], []
  for c in range(24):
    truth, wav = generate.clip_truth(seed, 0, c, frames, params)
    # The pose stream is the pose: nothing of the audio's randomness enters it.
    own = generate.sample_pose(generate.stream(seed, generate.STREAM_POSE, 0, c), frames)
    assert all(np.array_equal(own[k], truth[k]) for k in render.POSE_KEYS)
    energy = np.sqrt((wav.reshape(frames, 640) ** 2).mean(1))
    yaw_speed.append(np.abs(np.gradient(truth["yaw"])))
    yaw.append(truth["yaw"] - truth["yaw"].mean())
    loud.append(energy - energy.mean())
    mouth.append(truth["mouth_open"] - truth["mouth_open"].mean())
  corr = lambda a, b: abs(np.corrcoef(np.concatenate(a), np.concatenate(b))[0, 1])
  assert corr(yaw, loud) < 0.12 and corr(yaw, mouth) < 0.12 and corr(yaw_speed, loud) < 0.12
  assert corr(mouth, loud) > 0.4  # the test can see a dependence where there is one


@pytest.mark.parametrize("kind", ["clean", "blurred", "noisy"])
def test_analyzer_accuracy(kind):
  from data_pipeline.synthtalk.accuracy import analyzer_errors
  errors = analyzer_errors(kind, 16, RES, keys=("yaw", "pitch", "roll", "mouth_open", "mouth_width"))
  mae = {k: float(np.mean(v)) for k, v in errors.items()}
  assert max(mae.values()) <= 0.10, mae


def test_analyzer_rejects_blank_frames():
  with pytest.raises(analyzer.AnalysisError):
    analyzer.analyze_frame(np.full((64, 64, 3), 128, np.uint8))
  read = analyzer.analyze_frames(np.full((2, 64, 64, 3), 128, np.uint8))
  assert np.isnan(read["yaw"]).all()


def test_analyzer_rejects_a_black_face_without_warnings():
  frame = np.full((64, 64, 3), 200, np.uint8)
  cv2.ellipse(frame, (32, 32), (16, 22), 0, 0, 360, (0, 0, 0), -1)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    with pytest.raises(analyzer.AnalysisError, match="black"):
      analyzer.analyze_frame(frame)


def test_truth_scores_perfectly(eval_set):
  generated = {t.triple_id: t.truth_frames for t in eval_set.triples}
  s = scoring.score(generated, eval_set)
  assert s["ssim"] == 1.0 and s["psnr"] == 100.0
  for k in ("mouth_err", "pose_err", "identity_err", "lag", "abs_lag"):
    assert s[k] == 0.0, k
  assert s["sync"] == pytest.approx(1.0) and s["analysis_failures"] == 0.0
  # Float frames in [0, 1] or [-1, 1] (a tanh output) read the same.
  as01 = {k: v.astype(np.float32) / 255 for k, v in generated.items()}
  as11 = {k: v.astype(np.float32) / 127.5 - 1 for k, v in generated.items()}
  assert scoring.score(as01, eval_set)["mouth_err"] == 0.0
  assert scoring.score(as11, eval_set)["psnr"] == 100.0


def test_a_repeated_frame_is_read_once_and_reads_the_same(eval_set, monkeypatch):
  a, b = eval_set.triples[0].truth_frames[:2]
  calls = []
  read_one = analyzer.analyze_frame
  monkeypatch.setattr(analyzer, "analyze_frame", lambda f: calls.append(1) or read_one(f))
  read = analyzer.analyze_frames(np.stack([a, b, a]))
  assert len(calls) == 2
  for k, v in read.items():
    np.testing.assert_array_equal(v[2], v[0], err_msg=k)
    np.testing.assert_array_equal(v[:2], analyzer.analyze_frames(np.stack([a, b]))[k], err_msg=k)


def test_baselines_score_the_same_in_two_processes_and_the_truth_row_is_its_reading(eval_set):
  names = ("copy_reference", "reference_pose")
  one = scoring.baseline_scores(eval_set, names=names)
  two = scoring.baseline_scores(eval_set, names=names, workers=2)
  assert json.dumps(two, sort_keys=True) == json.dumps(one, sort_keys=True)
  assert list(one) == ["truth", *names]
  # The truth row, read from the set's stored readout, is what reading the truth frames gives.
  read = scoring.score({t.triple_id: t.truth_frames for t in eval_set.triples}, eval_set)
  assert json.dumps(one["truth"], sort_keys=True) == json.dumps(read, sort_keys=True)


def test_baselines_score_clearly_worse(eval_set):
  b = scoring.baseline_scores(eval_set)
  truth = b["truth"]
  for name in scoring.BASELINES:
    assert b[name]["ssim"] < 0.995 and b[name]["psnr"] < 60, name
  assert b["static_mouth"]["mouth_err"] > 0.08 and b["static_mouth"]["sync"] < 0.5
  assert b["other_audio"]["mouth_err"] > 0.08 and b["other_audio"]["sync0"] < 0.8
  assert b["reference_pose"]["pose_err"] > 0.08
  assert b["other_identity"]["identity_err"] > 0.05
  # Each baseline breaks what it is meant to and keeps the rest.
  assert b["static_mouth"]["pose_err"] < 0.03 and b["reference_pose"]["mouth_err"] < 0.05
  assert truth["mouth_err"] == 0 and truth["pose_err"] == 0


def test_lag_of_a_late_mouth(eval_set):
  """A mouth that moves two frames after the audio scores a lag of +2."""
  late = {}
  for t in eval_set.triples:
    truth = dict(t.truth)
    for k in render.MOUTH_KEYS:
      truth[k] = np.concatenate([np.repeat(truth[k][:1], 2), truth[k][:-2]])
    late[t.triple_id] = render.render_frames(t.identity_params, truth, RES)
  s = scoring.score(late, eval_set)
  assert s["lag"] == 2.0 and s["sync"] > 0.9 and s["sync0"] < s["sync"]


def test_eval_set_roundtrip_and_determinism(eval_set, tmp_path):
  path = eval_sets.save_eval_set(eval_set, tmp_path / "set.npz")
  back = eval_sets.load_eval_set(path)
  assert [t.triple_id for t in back.triples] == [t.triple_id for t in eval_set.triples]
  for a, b in zip(eval_set.triples, back.triples):
    assert (a.reference_clip, a.pose_clip, a.audio_clip) == (b.reference_clip, b.pose_clip,
                                                             b.audio_clip)
    assert a.reference_clip.split("/")[0] != a.pose_clip.split("/")[0] != a.audio_clip.split("/")[0]
    assert np.array_equal(a.truth_frames, b.truth_frames)
    assert all(np.array_equal(a.readout[k], b.readout[k]) for k in a.readout)
    # The truth is A's identity with B's pose and C's mouth.
    assert np.array_equal(render.render_frames(a.identity_params, a.truth, RES), a.truth_frames)


def test_split_is_by_identity():
  split = generate.split_identities(10, 0.2)
  assert split.train == tuple(range(8)) and split.test == (8, 9)
  assert generate.split_identities(3, 0.01).test == (2,)
  assert generate.split_identities(1, 0.2).test == ()


def test_command_builds_both_splits(tmp_path):
  from pcavs_jax.data import records
  from pcavs_jax.cli import synthtalk
  parser = argparse.ArgumentParser()
  synthtalk.register(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["synthtalk", "--out", str(tmp_path), "--identities", "4",
                            "--clips-per-identity", "1", "--resolution", "48", "--seed", "2",
                            "--frames", "4", "--test-fraction", "0.5", "--no-baselines"])
  assert args.func(args) == 0
  manifest = records.read_manifest(tmp_path)
  train, test = manifest["splits"]["train"], manifest["splits"]["test"]
  assert train["clips"] == 2 and test["clips"] == 2
  assert not set(train["identity_labels"]) & set(test["identity_labels"])
  assert (tmp_path / "cross_driven" / "eval_set.npz").exists()
  clips = list(records.read_clips(tmp_path, "test"))
  assert clips[0].frames.shape == (4, 48, 48, 3)


def test_self_driven_set_is_the_clip_itself(tmp_path):
  clips = list(generate.generate_clips(2, [0, 1], 2, 6, RES))
  self_set = eval_sets.build_self_driven_set(clips)
  assert len(self_set) == 4
  for tr, c in zip(self_set.triples, sorted(clips, key=lambda c: c.clip_id)):
    assert tr.reference_clip == tr.pose_clip == tr.audio_clip == c.clip_id
    assert np.array_equal(tr.truth_frames, c.frames) and tr.reference_label == c.label
    assert tr.other_identity_params["skin"].tobytes() != c.identity_params["skin"].tobytes()
  # Its copy-reference baseline is frame 0 of the truth itself.
  copy = scoring.baseline_frames(self_set, "copy_reference")
  assert np.array_equal(copy["s000"][0], self_set.triples[0].truth_frames[0])
  back = eval_sets.load_eval_set(eval_sets.save_eval_set(self_set, tmp_path / "self_set.npz"))
  assert [t.reference_label for t in back.triples] == [t.reference_label for t in self_set.triples]


def test_command_builds_seen_and_unseen_sets(tmp_path):
  """Seen triples come from held-out clips of training identities (labels kept), unseen from
  test identities; each set has its baselines; `set_paths` finds them all."""
  from pcavs_jax.data import records
  from pcavs_jax.cli import synthtalk
  import json
  parser = argparse.ArgumentParser()
  synthtalk.register(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["synthtalk", "--out", str(tmp_path), "--identities", "6",
                            "--clips-per-identity", "1", "--resolution", "48", "--frames", "6",
                            "--test-fraction", "0.5", "--self-driven"])
  assert args.func(args) == 0
  folder = tmp_path / "cross_driven"
  paths = eval_sets.set_paths(folder / "eval_set.npz")
  assert set(paths) == {"unseen", "seen", "self"}
  train_clips = {c.clip_id for c in records.read_clips(tmp_path, "train")}
  seen = eval_sets.load_eval_set(paths["seen"])
  unseen = eval_sets.load_eval_set(paths["unseen"])
  assert len(seen) == len(unseen) == 3
  for tr in seen.triples:
    assert tr.reference_clip.startswith(generate.identity_name(tr.reference_label))
    assert tr.reference_label in (0, 1, 2)
    assert {tr.reference_clip, tr.pose_clip, tr.audio_clip}.isdisjoint(train_clips)
  assert all(t.reference_label == -1 for t in unseen.triples)
  for path in paths.values():
    baselines = json.loads(eval_sets.baselines_path(path).read_text())
    assert {"truth", "copy_reference", "static_mouth"} <= set(baselines)
  assert eval_sets.baselines_path(paths["unseen"]).name == "baselines.json"


def test_write_synthtalk_library_call_and_bad_settings(tmp_path):
  from data_pipeline.synthtalk.write import SynthTalkSettings, write_synthtalk
  with pytest.raises(ValueError, match="--resolution"):
    write_synthtalk(tmp_path / "bad", SynthTalkSettings(resolution=16))
  assert not (tmp_path / "bad").exists()
  lines = []
  summary = write_synthtalk(tmp_path, SynthTalkSettings(identities=2, clips_per_identity=1,
                                                        resolution=48, frames=4,
                                                        test_fraction=0.5, baselines=False),
                            log=lines.append)
  assert summary["train_identities"] and summary["test_identities"]
  assert json.loads((tmp_path / "synthtalk.json").read_text())["triples"] == summary["triples"]
  assert any(line.startswith("synthtalk: train:") for line in lines)
