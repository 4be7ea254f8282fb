"""Training end to end on the tiny config: smoke, resume, determinism, NaN stop, SIGTERM."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs.default import get_config
from pcavs_jax.train import trainer as train

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def records(random_records) -> str:
  return random_records


def tiny_config(records: str, steps: int, **overrides):
  config = get_config("variant=tiny")
  config.data_dir = records
  config.num_train_steps = steps
  config.log_every = 1
  config.checkpoint_every = 2
  for key, value in overrides.items():
    target = config
    *path, leaf = key.split(".")
    for p in path:
      target = target[p]
    target[leaf] = value
  return config


def history(workdir) -> list[dict]:
  lines = (pathlib.Path(workdir) / "train_history.jsonl").read_text().splitlines()
  return [json.loads(l) for l in lines]


LOSS_KEYS = ("d_loss", "g_loss", "identity_ce", "sync_l1", "feature_matching_audio")


def losses(rows, steps):
  by_step = {r["step"]: r for r in rows}
  return np.array([[by_step[s][k] for k in LOSS_KEYS] for s in steps])


@pytest.fixture(scope="module")
def runs(records, tmp_path_factory):
  """An uninterrupted 4-step run, and a 2-step run resumed to 4 steps in a second call."""
  whole = tmp_path_factory.mktemp("whole")
  split = tmp_path_factory.mktemp("split")
  init = train.initial_state(tiny_config(records, 4), *_networks(records))
  state_whole = train.train_and_evaluate(tiny_config(records, 4), str(whole))
  state_half = train.train_and_evaluate(tiny_config(records, 2), str(split))
  state_resumed = train.train_and_evaluate(tiny_config(records, 4), str(split))
  return dict(whole=whole, split=split, init=init, state_whole=state_whole,
              state_half=state_half, state_resumed=state_resumed)


def _networks(records):
  from pcavs_jax.models.pcavs import build_discriminator, build_model
  from pcavs_jax.train import steps as train_steps
  c = tiny_config(records, 1)
  return build_model(c.model).clone(bn_axis_name=train_steps.AXIS), build_discriminator(c.model)


def test_two_step_smoke(runs):
  rows = history(runs["split"])[:2]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r[k]) for r in rows for k in LOSS_KEYS)
  changed = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)),
                         runs["init"].g_params, runs["state_half"].g_params)
  for network, flags in changed.items():
    assert any(jax.tree.leaves(flags)), f"{network} parameters did not change"
  assert not np.array_equal(jax.tree.leaves(runs["init"].d_params)[0],
                            jax.tree.leaves(runs["state_half"].d_params)[0])
  assert (runs["split"] / "checkpoints" / "2").is_dir()
  assert list((runs["split"]).glob("events.out.tfevents.*")), "no TensorBoard summaries written"


def test_checkpoint_carries_the_moving_average(runs):
  from pcavs_jax.checkpoint import load_checkpoint, load_training_checkpoint
  state = runs["state_half"]
  assert state.ema_decay == 0.99
  # After two steps the average sits between the initial and the trained parameters.
  init, ema, raw = (np.asarray(jax.tree.leaves(t["generator"])[0])
                    for t in (runs["init"].g_params, state.ema_params, state.g_params))
  assert not np.allclose(ema, raw) and not np.allclose(ema, init)
  _, averaged = load_training_checkpoint(runs["split"], step=2)
  _, trained = load_checkpoint(runs["split"], step=2, ema=False)
  for loaded, expected in ((averaged, state.ema_params), (trained, state.g_params)):
    for a, b in zip(jax.tree.leaves(loaded["params"]), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_gives_the_losses_of_an_uninterrupted_run(runs):
  whole, resumed = history(runs["whole"]), history(runs["split"])
  assert [r["step"] for r in resumed] == [1, 2, 3, 4]
  np.testing.assert_allclose(losses(resumed, [3, 4]), losses(whole, [3, 4]), rtol=1e-5)
  for part in ("g_params", "ema_params"):
    np.testing.assert_allclose(
        np.asarray(jax.tree.leaves(getattr(runs["state_resumed"], part))[0]),
        np.asarray(jax.tree.leaves(getattr(runs["state_whole"], part))[0]), rtol=1e-5, atol=1e-6)


def test_same_seed_gives_the_same_losses(runs):
  np.testing.assert_array_equal(losses(history(runs["split"]), [1, 2]),
                                losses(history(runs["whole"]), [1, 2]))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(records, tmp_path, monkeypatch):
  # A corrupt batch (NaN mel) at step 3, with the config of `runs`: the compiled step is reused.
  clean_batches = train.train_batches

  def batches_with_a_nan_mel_at_step_3(config, start_step):
    for step, batch in enumerate(clean_batches(config, start_step), start_step + 1):
      if step == 3:
        batch = dict(batch, mel=np.full_like(batch["mel"], np.nan))
      yield batch

  monkeypatch.setattr(train, "train_batches", batches_with_a_nan_mel_at_step_3)
  train.train_and_evaluate(tiny_config(records, 2, checkpoint_every=1), str(tmp_path))
  with pytest.raises(train.NonFiniteLossError, match="non-finite .* step 3"):
    train.train_and_evaluate(tiny_config(records, 6, checkpoint_every=1), str(tmp_path))
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 2
  from pcavs_jax.checkpoint import load_training_checkpoint
  _, variables = load_training_checkpoint(tmp_path)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables["params"]))


def test_the_training_probe_runs_every_eval_every_steps(records, tmp_path):
  """The caller's probe factory gets the eval-mode model; its measures go to mechanisms.jsonl
  and `on_log`."""
  calls, logged = [], []

  def factory(config, model):
    assert model.bn_axis_name is None and config.eval_every == 2

    def probe(variables):
      calls.append(variables)
      return {"seen/mouth_ratio": 0.5 * len(calls), "probe_seconds": 0.0}
    return probe

  config = tiny_config(records, 4, eval_every=2, checkpoint_every=4)
  train.train_and_evaluate(config, str(tmp_path), probe_factory=factory,
                           on_log=lambda step, scalars: logged.append((step, scalars)))
  assert len(calls) == 2 and set(calls[0]) == {"params", "batch_stats"}
  from pcavs_jax.data.files import read_jsonl
  rows = read_jsonl(tmp_path / "mechanisms.jsonl")
  assert [(r["step"], r["seen/mouth_ratio"]) for r in rows] == [(2, 0.5), (4, 1.0)]
  assert [s for s, scalars in logged if "seen/mouth_ratio" in scalars] == [2, 4]
  with pytest.raises(ValueError, match="not both"):
    train.train_and_evaluate(config, str(tmp_path), probe=lambda v: {}, probe_factory=factory)


def test_precise_statistics_reach_the_checkpoint_and_leave_training_alone(runs, records,
                                                                           tmp_path):
  """With train.precise_bn_batches, each checkpoint holds E_i's statistics re-estimated for its
  moving average over the drawn training frames; the other networks' statistics and the losses
  are those of the same run without it (training mode never reads running statistics)."""
  from pcavs_jax.checkpoint import load_checkpoint
  from pcavs_jax.train.precise_bn import PreciseBatchStats, training_frames
  config = tiny_config(records, 4, **{"train.precise_bn_batches": 3})
  train.train_and_evaluate(config, str(tmp_path))
  np.testing.assert_array_equal(losses(history(tmp_path), [1, 2, 3, 4]),
                                losses(history(runs["whole"]), [1, 2, 3, 4]))
  model, precise = load_checkpoint(tmp_path, step=4)
  _, plain = load_checkpoint(runs["whole"], step=4)
  frames = training_frames(records, 3, config.train.precise_bn_batch_size, 64, seed=config.seed)
  expected = PreciseBatchStats(model)(plain, frames)["batch_stats"]
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               precise["batch_stats"], expected)
  assert not np.allclose(precise["batch_stats"]["identity_encoder"]["bn1"]["var"],
                         plain["batch_stats"]["identity_encoder"]["bn1"]["var"])


def test_a_data_dir_without_records_is_named(tmp_path):
  with pytest.raises(ValueError, match=r"data_dir .* no records of split 'train'"):
    next(train.train_batches(tiny_config(str(tmp_path), 1), 0))


def test_sigterm_saves_and_exits(records, tmp_path):
  script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
            "from test_train import tiny_config\n"
            "from pcavs_jax.train import trainer as train\n"
            # The identity stage compiles in a fraction of the full step's time; the signal
            # handling does not depend on the stage.
            f"c = tiny_config({records!r}, 100000, checkpoint_every=100000, "
            "**{'train.stage': 'identity'})\n"
            f"train.train_and_evaluate(c, {str(tmp_path)!r})\n")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 600
  events = tmp_path / "train_history.jsonl"
  # Wait until training steps run (their losses are logged), then ask it to stop.
  while time.time() < deadline and not events.exists() and proc.poll() is None:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps and 0 < max(steps) < 100000, out[-2000:]
  assert events.exists()


@pytest.mark.parametrize("stage", ["sync", "sync_trunk"])
def test_sync_stages_train_only_the_mouth_pathway(records, tmp_path, stage):
  config = tiny_config(records, 1, **{"train.stage": stage})
  init = train.initial_state(config, *_networks(records))
  state = train.train_and_evaluate(config, str(tmp_path))

  def changed(network, part=None):
    old, new = init.g_params[network], state.g_params[network]
    if part is not None:
      old, new = old[part], new[part]
    return any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))

  assert changed("audio_encoder") and changed("nonidentity_encoder", "to_mouth")
  # Only 'sync_trunk' lets the contrastive loss reach E_n's trunk.
  assert changed("nonidentity_encoder", "fan") == (stage == "sync_trunk")
  assert not changed("nonidentity_encoder", "to_headpose")
  assert not changed("generator") and not changed("identity_encoder")


def test_pixel_losses_alone_leave_the_discriminator_out(records, tmp_path):
  """No GAN and no feature-matching weight: D neither runs nor trains; G learns by pixel L1 and
  the mouth reader (which reads the fakes with E_n, not D)."""
  config = tiny_config(records, 1, **{"loss.gan": 0.0, "loss.feature_matching": 0.0,
                                      "loss.l1_image": 1.0, "loss.mouth_reader": 1.0})
  init = train.initial_state(config, *_networks(records))
  state = train.train_and_evaluate(config, str(tmp_path))
  (row,) = history(tmp_path)
  assert "d_loss" not in row and "gan_visual" not in row and row["l1_image_visual"] > 0
  assert row["mouth_reader_visual"] > 0 and row["mouth_reader_audio"] > 0
  for a, b in zip(jax.tree.leaves(init.d_params), jax.tree.leaves(state.d_params)):
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
  assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(init.g_params["generator"]),
                 jax.tree.leaves(state.g_params["generator"])))


@pytest.mark.slow  # ~6 min on 2 cores: six train-step compiles (identity and full, three runs)
def test_stage_schedule_switches_and_resumes_across_the_boundary(records, tmp_path):
  """identity for 2 steps, then full: E_i alone trains first; a run stopped at the boundary and
  resumed ends with the parameters of an uninterrupted run."""
  staged = dict(**{"train.schedule": "identity:2,full"})
  init = train.initial_state(tiny_config(records, 3), *_networks(records))
  whole = train.train_and_evaluate(tiny_config(records, 3, **staged), str(tmp_path / "whole"))
  half = train.train_and_evaluate(tiny_config(records, 2, **staged), str(tmp_path / "split"))
  resumed = train.train_and_evaluate(tiny_config(records, 3, **staged), str(tmp_path / "split"))
  rows = history(tmp_path / "whole")
  assert [("d_loss" in r) for r in rows] == [False, False, True]
  assert "identity_ce" in rows[0] and "sync_l1" not in rows[0] and "sync_l1" in rows[2]
  for network in init.g_params:
    same = jax.tree.leaves(jax.tree.map(
        lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
        init.g_params[network], half.g_params[network]))
    assert all(same) != (network == "identity_encoder"), network
  for a, b in zip(jax.tree.leaves(whole.g_params), jax.tree.leaves(resumed.g_params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # barely trained: little to analyse
def test_synthtalk_curve_scores_every_kept_checkpoint(runs, tmp_path):
  from pcavs_jax.data.synthtalk import eval_sets
  from data_pipeline.synthtalk import generate as st_generate
  from pcavs_jax.evaluate import cross_driven, mechanisms, report
  clips = list(st_generate.generate_clips(0, [0, 1, 2], 1, 12, 64))
  es_path = eval_sets.save_eval_set(eval_sets.build_eval_set(clips, 2),
                                      tmp_path / "cross_driven" / "eval_set.npz")
  rows = cross_driven.evaluate_steps(str(runs["whole"]), str(es_path), batch_size=4)
  assert [r["step"] for r in rows] == [2, 4]
  latest = cross_driven.evaluate_checkpoint(str(runs["whole"]), str(es_path), batch_size=4)
  assert rows[-1]["ssim"] == latest["model"]["ssim"]
  assert rows[0]["ssim"] != rows[1]["ssim"]  # different parameters, different frames
  assert set(latest["generated"]) == {"x000", "x001"}
  assert latest["generated"]["x000"].shape == (12, 64, 64, 3)
  assert all({"mouth_ratio", "pose_ratio", "lag"} <= set(r) for r in rows)
  assert "mouth_ratio" in report.curve_table(rows)
  from pcavs_jax.checkpoint import load_checkpoint
  model, variables = load_checkpoint(str(runs["whole"]))
  probe = mechanisms.probe_codes(model, variables, eval_sets.load_eval_set(es_path))
  assert set(probe["pose_code_r2"]) == set(mechanisms.POSE_KEYS) | {"mouth_open", "mouth_width"}
  assert all(v <= 1.0 for row in ("pose_code_r2", "mouth_feature_r2", "audio_mouth_r2")
             for v in probe[row].values())
  follows = ("follows_drivers", "drivers_slope", "follows_pose_source", "follows_reference")
  assert all(set(probe[row]) == {"yaw", "pitch", "roll", "mouth_open", "mouth_width"}
             for row in follows)
  assert all(np.isnan(v) or -1.0 <= v <= 1.0
             for row in ("follows_drivers", "follows_pose_source", "follows_reference")
             for v in probe[row].values())
  assert all(0.0 <= v <= 1.0 for v in probe["sync"].values())


def test_mouth_l1_term_weights_only_the_mouth_box():
  from pcavs_jax.train import losses as loss_fns
  from pcavs_jax.train import steps as train_steps
  config = get_config("variant=tiny")
  config.loss.mouth_l1 = 4.0
  b, r = 2, 16
  rng = np.random.default_rng(0)
  target = jax.numpy.asarray(rng.uniform(-1, 1, (b, r, r, 3)).astype(np.float32))
  fake = jax.numpy.asarray(rng.uniform(-1, 1, (b, r, r, 3)).astype(np.float32))
  d_out = [[jax.numpy.zeros((3 * b, 2, 2, 1))]]     # one D scale holding only logits

  def mouth_terms(fake_visual):
    outputs = {"fake_visual": fake_visual, "fake_audio": fake}
    _, terms = train_steps._g_losses(outputs, d_out, {"target": target}, config.loss, None)
    return terms["mouth_l1_visual"], terms

  (value, terms), grad = jax.value_and_grad(mouth_terms, has_aux=True)(fake)
  np.testing.assert_allclose(
      value, 4.0 * loss_fns.box_l1_loss(fake, target, config.loss.mouth_box), rtol=1e-6)
  assert "mouth_l1_audio" in terms
  top, bottom, left, right = (int(round(f * r)) for f in config.loss.mouth_box)
  mask = np.zeros((r, r), bool)
  mask[top:bottom, left:right] = True
  grad = np.abs(np.asarray(grad)).sum(axis=(0, 3))
  assert np.all(grad[mask] > 0) and np.all(grad[~mask] == 0)


def test_ssim_term_joins_the_generator_losses_only_when_weighted():
  from pcavs_jax.train import losses as loss_fns
  from pcavs_jax.train import steps as train_steps
  config = get_config("variant=tiny")
  rng = np.random.default_rng(1)
  target, fake = (jax.numpy.asarray(rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32))
                  for _ in range(2))
  outputs = {"fake_visual": fake, "fake_audio": target}
  d_out = [[jax.numpy.zeros((6, 2, 2, 1))]]
  _, terms = train_steps._g_losses(outputs, d_out, {"target": target}, config.loss, None)
  assert not any(k.startswith("ssim_image") for k in terms)
  config.loss.ssim_image = 3.0
  _, terms = train_steps._g_losses(outputs, d_out, {"target": target}, config.loss, None)
  np.testing.assert_allclose(terms["ssim_image_visual"], 3.0 * loss_fns.ssim_loss(fake, target),
                             rtol=1e-6)
  assert float(terms["ssim_image_audio"]) == pytest.approx(0.0, abs=1e-5)


def test_without_the_visual_fake_every_image_term_reads_the_audio_fake_alone(records, tmp_path):
  """loss.visual_fake=False: G draws only the audio-driven fake, the same one it draws beside
  the visual-driven fake, and every image term (D, GAN, L1, mouth reader) reads it alone."""
  config = tiny_config(records, 1, **{"loss.visual_fake": False, "loss.l1_image": 1.0,
                                      "loss.mouth_reader": 1.0})
  model, _ = _networks(records)
  r = model.resolution
  rng = np.random.default_rng(3)
  frames = [jax.numpy.asarray(rng.uniform(-1, 1, (2, r, r, 3)).astype(np.float32))
            for _ in range(2)]
  mel = jax.numpy.asarray(rng.uniform(0, 1, (2, 80, 20)).astype(np.float32))
  variables = jax.jit(model.clone(bn_axis_name=None).init)(
      {"params": jax.random.key(0)}, frames[0], mel, frames[1])
  run = lambda visual_fake: model.clone(bn_axis_name=None).apply(
      variables, frames[0], mel, frames[1], visual_fake=visual_fake)
  both, audio_only = run(True), run(False)
  assert "fake_visual" not in audio_only
  np.testing.assert_allclose(audio_only["fake_audio"], both["fake_audio"], atol=1e-5)

  train.train_and_evaluate(config, str(tmp_path))
  (row,) = history(tmp_path)
  for term in ("gan", "feature_matching", "l1_image", "mouth_reader"):
    assert np.isfinite(row[f"{term}_audio"]) and f"{term}_visual" not in row, term
  assert np.isfinite(row["d_loss"]) and row["sync_contrastive_va"] > 0


def test_mouth_reader_term_compares_what_the_nonidentity_encoder_reads_in_fake_and_target():
  from pcavs_jax.models.pcavs import build_model
  from pcavs_jax.train import losses as loss_fns
  from pcavs_jax.train import steps as train_steps
  config = get_config("variant=tiny")
  assert not train_steps.uses_mouth_reader(config.loss)    # off unless weighted
  config.loss.mouth_reader = 5.0
  model = build_model(config.model)
  r = model.resolution
  rng = np.random.default_rng(2)
  target, fake = (jax.numpy.asarray(rng.uniform(-1, 1, (2, r, r, 3)).astype(np.float32))
                  for _ in range(2))
  variables = jax.jit(model.init)({"params": jax.random.key(0)}, target[:1],
                                  jax.numpy.zeros((1, 80, 20)), target[:1])
  d_out = [[jax.numpy.zeros((6, 2, 2, 1))]]

  def term(fake_visual):
    outs = {"fake_visual": fake_visual, "fake_audio": target}
    read = train_steps._read_mouths(model, variables["params"], variables["batch_stats"], outs,
                                    target)
    _, terms = train_steps._g_losses(outs, d_out, {"target": target}, config.loss, None, read)
    return terms["mouth_reader_visual"], terms

  (value, terms), grad = jax.jit(jax.value_and_grad(term, has_aux=True))(fake)
  read = jax.jit(lambda x: model.apply(variables, x, method=model.encode_nonidentity)["mouth"])
  np.testing.assert_allclose(value, 5.0 * loss_fns.l1_loss(read(fake), read(target)), rtol=1e-5)
  assert float(value) > 0 and float(terms["mouth_reader_audio"]) == pytest.approx(0.0, abs=1e-6)
  assert np.abs(np.asarray(grad)).sum() > 0


def test_pose_mouth_decorrelation_is_the_squared_correlation_of_the_pose_code_with_the_mouth():
  from pcavs_jax.train import steps as train_steps
  config = get_config("variant=tiny")
  config.loss.pose_mouth_decorrelation = 2.0
  rng = np.random.default_rng(3)
  truth = {"mouth_open": rng.uniform(0, 1, 16).astype(np.float32),
           "mouth_width": rng.uniform(0, 1, 16).astype(np.float32)}
  code = rng.normal(size=(16, 12)).astype(np.float32)
  code[:, 0] = 3.0 * truth["mouth_open"] + 1.0         # one number carries the openness exactly
  term = jax.vmap(lambda c, t: train_steps._g_losses({"pose_code": c}, None, {"truth": t},
                                                     config.loss, None)[1],
                  axis_name=train_steps.AXIS)
  value = float(term(code[None], jax.tree.map(lambda x: x[None], truth))
                ["pose_mouth_decorrelation"][0])
  corr = np.corrcoef(code.T, np.stack([truth["mouth_open"], truth["mouth_width"]]))[:12, 12:]
  assert value == pytest.approx(2.0 * np.mean(corr ** 2), rel=1e-4)
  assert value >= 2.0 / 24                            # the exact number alone gives 1 / 24


def test_a_rerun_reads_every_compiled_program_from_the_persistent_cache(records, tmp_path):
  """A first run (in a fresh process: JAX sets its cache folder once per process) of two stages
  compiles both stages' train steps in the background, the second once the first step is done,
  and the loop uses them: no train step compiles a third time. Its programs fill the cache
  folder, and a second run with a new workdir compiles nothing new."""
  cache = tmp_path / "xla_cache"

  def run(name):
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
              f"sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n"
              "from test_train import tiny_config\n"
              "import jax; jax.config.update('jax_log_compiles', True)\n"
              "from absl import logging; logging.set_verbosity('info')\n"
              "from pcavs_jax.train import trainer as train\n"
              f"c = tiny_config({records!r}, 2, compilation_cache_dir={str(cache)!r}, "
              "**{'train.schedule': 'identity:1,sync'})\n"
              f"train.train_and_evaluate(c, {str(tmp_path / name)!r})\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first step done" in proc.stderr
    assert "stage 'sync' train step compiled in the background" in proc.stderr
    if name == "first":  # jax_log_compiles: a pmapped step compiles as 'jit(_fun)'; only twice
      assert proc.stderr.count("Compiling jit(_fun)") == 2   # (a third: the loop compiled again)
    return {p.name: p.stat().st_size for p in cache.iterdir()}

  first = run("first")
  assert len(first) > 10 and max(first.values()) > 100_000, first   # the step is the largest
  second = run("second")
  assert second == first


def test_truth_terms_regress_the_named_code_numbers_only():
  """pose_truth ties the pose code's first 3 numbers to yaw / pitch / roll over half their
  ranges, mouth_truth both mouth features' first 2 to the mouth; nothing else gets a gradient."""
  from pcavs_jax.data.synthtalk.analyzer import RANGES
  from pcavs_jax.train import steps as train_steps
  config = get_config("variant=tiny")
  config.loss.gan = config.loss.feature_matching = 0.0
  config.loss.contrastive = config.loss.crossmodal_l1 = 0.0
  config.loss.pose_truth, config.loss.mouth_truth = 3.0, 5.0
  rng = np.random.default_rng(0)
  b, clip_len = 2, 3
  truth = {k: rng.uniform(-20, 20, (b, clip_len)).astype(np.float32)
           for k in ("yaw", "pitch", "roll", "tx")}
  truth.update({k: rng.uniform(0, 1, (b, clip_len)).astype(np.float32)
                for k in ("mouth_open", "mouth_width")})
  frames = np.zeros((b, clip_len, 8, 8, 3), np.float32)
  batch = train_steps.flatten_clip({
      "target": frames, "pose_source": frames, "reference": frames[:, :1],
      "mel": np.zeros((b, clip_len, 80, 20), np.float32), "label": np.zeros((b,), np.int32),
      "truth": truth})
  assert batch["truth"]["yaw"].shape == (b * clip_len,)
  outputs = {"pose_code": rng.normal(size=(b * clip_len, 12)).astype(np.float32),
             "visual_mouth": rng.normal(size=(b * clip_len, 16)).astype(np.float32),
             "audio_mouth": rng.normal(size=(b * clip_len, 16)).astype(np.float32)}

  def total(outs):   # one device's losses: the sync term gathers over the device axis
    one = jax.vmap(lambda o: train_steps._g_losses(o, None, batch, config.loss, None),
                   axis_name=train_steps.AXIS)
    loss, terms = one(jax.tree.map(lambda x: x[None], outs))
    return loss[0], jax.tree.map(lambda x: x[0], terms)

  (_, terms), grads = jax.value_and_grad(total, has_aux=True)(outputs)
  flat = lambda k: np.asarray(batch["truth"][k])
  pose_target = np.stack([flat(k) / (RANGES[k] / 2) for k in ("yaw", "pitch", "roll")], -1)
  np.testing.assert_allclose(
      terms["pose_truth"], 3.0 * np.mean((outputs["pose_code"][:, :3] - pose_target) ** 2),
      rtol=1e-5)
  mouth_target = np.stack([flat(k) / 0.5 for k in ("mouth_open", "mouth_width")], -1)
  expected = sum(np.mean((outputs[f"{s}_mouth"][:, :2] - mouth_target) ** 2)
                 for s in ("visual", "audio"))
  np.testing.assert_allclose(terms["mouth_truth"], 5.0 * expected, rtol=1e-5)
  for name, k in (("pose_code", 3), ("visual_mouth", 2), ("audio_mouth", 2)):
    g = np.abs(np.asarray(grads[name]))
    assert np.all(g[:, :k].sum(0) > 0) and np.all(g[:, k:] == 0), name
