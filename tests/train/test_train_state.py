"""GAN train state and optimisers: per-stage freezing, TTUR rates, AMSGrad on the G side."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from pcavs_jax.train import optimizers
from pcavs_jax.train import stages
from pcavs_jax.train import state as ts


def _config(**overrides):
  t = optimizers.train_config()
  t.decay_start_step, t.decay_end_step = 10, 20
  t.update(overrides)
  return t


def _g_params():
  """A G-side tree with the parameter names of the real networks (tiny leaves)."""
  leaf = lambda v: {"kernel": jnp.full((2, 2), v), "bias": jnp.full((2,), v)}
  return {
      "identity_encoder": {"conv1": leaf(1.0), "fc": leaf(1.0)},
      "nonidentity_encoder": {"fan": {"conv1": leaf(2.0)}, "to_mouth": {"Dense_0": leaf(2.0)},
                              "mouth_embed": {"Dense_0": leaf(2.0)},
                              "to_headpose": {"Dense_0": leaf(2.0)}},
      "audio_encoder": {"se_resnet": {"conv1": leaf(3.0)}, "classifier": leaf(3.0)},
      "generator": {"to_rgb": leaf(4.0)},
  }


def _d_params():
  return {"scale0": {"conv0": {"kernel": jnp.ones((3, 3))}}}


def _names(path):
  return tuple(k.key for k in path)


def _state(stage, **overrides):
  return ts.create_train_state(_g_params(), _d_params(), {"g": {}, "d": {}}, _config(**overrides),
                               stage, jax.random.PRNGKey(0))


TRAINS = {
    "identity": lambda n: n[0] == "identity_encoder",
    "sync": lambda n: n[0] == "audio_encoder" or n[:2] == ("nonidentity_encoder", "to_mouth"),
    "sync_trunk": lambda n: n[0] == "audio_encoder" or n[:2] in (("nonidentity_encoder", "to_mouth"),
                                                                 ("nonidentity_encoder", "fan")),
    "full": lambda n: True,
}


@pytest.mark.parametrize("stage", sorted(TRAINS))
def test_frozen_subtrees_get_exactly_zero_updates(stage):
  state = _state(stage)
  grads = jax.tree.map(jnp.ones_like, state.g_params)
  step = jax.jit(lambda s, g, d: s.apply_g_gradients(g).apply_d_gradients(d))
  new = step(state, grads, jax.tree.map(jnp.ones_like, state.d_params))
  for (path, old), new_leaf in zip(jax.tree_util.tree_leaves_with_path(state.g_params),
                                   jax.tree.leaves(new.g_params)):
    changed = bool(jnp.any(old != new_leaf))
    assert changed == TRAINS[stage](_names(path)), (stage, _names(path))
  d_changed = bool(jnp.any(state.d_params["scale0"]["conv0"]["kernel"]
                           != new.d_params["scale0"]["conv0"]["kernel"]))
  assert d_changed == (stage == "full")
  # Frozen parameters carry no optimiser state.
  n_state = sum(x.size for x in jax.tree.leaves(state.g_opt_state) if jnp.ndim(x) > 0)
  n_train = sum(x.size for p, x in jax.tree_util.tree_leaves_with_path(state.g_params)
                if TRAINS[stage](_names(p)))
  assert n_state == 3 * n_train   # AMSGrad: mu, nu, nu_max


def test_official_full_stage_leaves_the_pose_heads_and_mouth_embedding_untrained():
  state = _state("full", full_params="official")
  grads = jax.tree.map(jnp.ones_like, state.g_params)
  new = jax.jit(lambda s, g: s.apply_g_gradients(g))(state, grads)
  frozen = {("nonidentity_encoder", "mouth_embed"), ("nonidentity_encoder", "to_headpose")}
  for (path, old), new_leaf in zip(jax.tree_util.tree_leaves_with_path(state.g_params),
                                   jax.tree.leaves(new.g_params)):
    assert bool(jnp.any(old != new_leaf)) == (_names(path)[:2] not in frozen), _names(path)
  with pytest.raises(ValueError, match="full_params"):
    _state("full", full_params="some")


def test_state_is_a_pytree_with_static_optimisers():
  state = _state("full")
  leaves = jax.tree.leaves(state)
  assert all(isinstance(x, jax.Array) for x in leaves)
  assert int(state.step) == 0 and state.batch_stats == {"g": {}, "d": {}}
  replaced = state.replace(step=state.step + 1)
  assert replaced.g_tx is state.g_tx and int(replaced.step) == 1


def test_moving_average_of_the_generator_side():
  state = ts.create_train_state(_g_params(), _d_params(), None, _config(ema_decay=0.9), "full")
  assert state.ema_decay == 0.9
  np.testing.assert_array_equal(state.ema_params["generator"]["to_rgb"]["bias"], 4.0)
  moved = state.replace(g_params=jax.tree.map(lambda x: x + 1.0, state.g_params))
  update = jax.jit(lambda s, step: s.update_ema(step))
  # Step 0: the ramp-up decay 1/10 replaces 90 % of the average; step 100: the cap 0.9, 10 %.
  early, late = update(moved, 0), update(moved, 100)
  np.testing.assert_allclose(early.ema_params["generator"]["to_rgb"]["bias"], 4.9, rtol=1e-6)
  np.testing.assert_allclose(late.ema_params["identity_encoder"]["fc"]["kernel"], 1.1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(late.g_params), jax.tree.leaves(moved.g_params)):
    np.testing.assert_array_equal(a, b)
  # Off: no average is kept and the update leaves the state alone.
  off = ts.create_train_state(_g_params(), _d_params(), None, _config(), "full")
  assert off.ema_params == {} and off.update_ema(jnp.asarray(5)) is off
  with pytest.raises(ValueError, match="ema_decay"):
    ts.create_train_state(_g_params(), _d_params(), None, _config(ema_decay=1.0), "full")


def test_unknown_stage_network_or_path_is_rejected():
  with pytest.raises(ValueError, match="unknown stage"):
    optimizers.make_optimizers(_config(), "pretrain")
  with pytest.raises(ValueError, match="amsgrad_form"):
    optimizers.make_optimizers(_config(amsgrad_form="keras"), "full")
  optax_form = optimizers.make_optimizers(_config(amsgrad_form="optax"), "full")["generator"]
  assert _find_states(optax_form.init({"w": jnp.zeros(2)}), optax.ScaleByAmsgradState)
  with pytest.raises(ValueError, match="keyed by networks"):
    ts.create_train_state({"netG": {}}, _d_params(), None, _config(), "full")
  params = _g_params()
  del params["nonidentity_encoder"]["to_mouth"]
  with pytest.raises(ValueError, match="to_mouth"):
    ts.create_train_state(params, _d_params(), None, _config(), "sync")


def test_learning_rate_schedules_ttur_and_linear_decay():
  sched = optimizers.learning_rate_schedules(_config(lr=1e-3, final_lr_fraction=0.0))
  g, d = sched["generator"], sched["discriminator"]
  for step, frac in [(0, 1.0), (10, 1.0), (15, 0.5), (20, 0.0), (30, 0.0)]:
    assert float(g(step)) == pytest.approx(5e-4 * frac, rel=1e-6, abs=1e-12)
    assert float(d(step)) == pytest.approx(2e-3 * frac, rel=1e-6, abs=1e-12)
  flat = optimizers.learning_rate_schedules(_config(ttur=False, decay_start_step=5, decay_end_step=0))
  assert float(flat["generator"](1000)) == pytest.approx(1e-3)
  # The whole config works too (reads config.train).
  whole = ml_collections.ConfigDict({"train": _config()})
  assert float(optimizers.learning_rate_schedules(whole)["generator"](0)) == pytest.approx(5e-4)


def test_learning_rate_steps_scale_both_rates_from_their_step_on():
  # Constant rates scaled by 1.5 from step 4 and by 0.5 more from step 8; with the linear decay
  # (steps 10-20) the scale multiplies the decayed rate.
  sched = optimizers.learning_rate_schedules(
      _config(lr=1e-3, ttur=False, lr_steps="4:1.5, 8:0.5", final_lr_fraction=0.0))
  for step, factor in [(0, 1.0), (3, 1.0), (4, 1.5), (7, 1.5), (8, 0.75), (15, 0.375), (20, 0.0)]:
    for side in ("generator", "discriminator"):
      assert float(sched[side](step)) == pytest.approx(1e-3 * factor, rel=1e-6, abs=1e-12), step
  # The optimiser follows the scaled rate: a stage starting at step 6 takes 1.5 x lr sign-steps.
  tx = optimizers.make_optimizers(_config(lr=1e-3, ttur=False, amsgrad=False, lr_steps="4:1.5"),
                                  "full", first_step=6)["discriminator"]
  params = {"w": jnp.ones(3)}
  updates, _ = tx.update({"w": jnp.array([2.0, -3.0, 0.5])}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-1.5e-3, 1.5e-3, -1.5e-3], rtol=1e-4)


def _find_states(tree, cls):
  return [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, cls))
          if isinstance(x, cls)]


def test_generator_side_uses_amsgrad_and_discriminator_adam():
  state = _state("full")
  assert _find_states(state.g_opt_state, optax.ScaleByAmsgradState)
  assert not _find_states(state.d_opt_state, optax.ScaleByAmsgradState)
  assert _find_states(state.d_opt_state, optax.ScaleByAdamState)

  # One big gradient, then small ones: AMSGrad keeps the largest second moment (small steps),
  # Adam (beta1 0, beta2 0.9) forgets it within a few steps.
  x = {"w": jnp.zeros(())}
  txs = optimizers.make_optimizers(_config(decay_start_step=0, decay_end_step=0), "full")
  g_state, d_state = txs["generator"].init(x), txs["discriminator"].init(x)
  for g in [100.0] + [1.0] * 60:
    grad = {"w": jnp.asarray(g)}
    g_up, g_state = txs["generator"].update(grad, g_state, x)
    d_up, d_state = txs["discriminator"].update(grad, d_state, x)
  g_step, d_step = -float(g_up["w"]) / 5e-4, -float(d_up["w"]) / 2e-3   # per unit lr
  assert g_step == pytest.approx(1 / np.sqrt(0.1 * 100.0**2), rel=1e-3)  # the spike's raw nu
  assert d_step > 5 * g_step


@pytest.mark.parametrize("side", ["generator", "discriminator"])
def test_optimisers_match_torch(side):
  """G: torch Adam(amsgrad=True, lr/2); D: torch Adam(lr*2); both betas (0, 0.9)."""
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  scale = np.concatenate([[30.0], np.linspace(3.0, 0.3, 39)])[:, None]   # an early spike
  grads = (rng.normal(size=(40, 5)) * scale).astype(np.float32)
  w = torch.zeros(5, requires_grad=True)
  lr = 5e-4 if side == "generator" else 2e-3
  opt = torch.optim.Adam([w], lr=lr, betas=(0.0, 0.9), amsgrad=side == "generator")
  tx = optimizers.make_optimizers(_config(decay_start_step=0, decay_end_step=0), "full")[side]
  x = jnp.zeros(5)
  state = tx.init(x)
  update = jax.jit(tx.update)
  for g in grads:
    w.grad = torch.from_numpy(g)
    opt.step()
    updates, state = update(jnp.asarray(g), state, x)
    x = optax.apply_updates(x, updates)
  np.testing.assert_allclose(np.asarray(x), w.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_gradient_norms_per_network():
  grads = jax.tree.map(jnp.ones_like, _g_params())
  norms = ts.gradient_norms(grads)
  assert set(norms) == set(stages.GNetworks)
  # generator: one 2x2 kernel and one bias of ones -> sqrt(6)
  assert float(norms["generator"]) == pytest.approx(np.sqrt(6.0))
  assert float(norms["nonidentity_encoder"]) == pytest.approx(np.sqrt(24.0))


@pytest.mark.parametrize("amsgrad", [True, False])
def test_a_later_stage_follows_the_runs_learning_rate(amsgrad):
  """A stage's optimisers start counting at 0, but apply the rate of the run's step."""
  config = _config(lr=1e-3, ttur=False, amsgrad=amsgrad, decay_start_step=100,
                   decay_end_step=200, final_lr_fraction=0.0)
  rates = optimizers.learning_rate_schedules(config)
  x = {"w": jnp.zeros(())}
  for first_step in (0, 120, 150, 250):
    txs = optimizers.make_optimizers(config, "full", first_step=first_step)
    for side, tx in txs.items():
      state = tx.init(x)
      for k in range(3):   # beta1 0: each step moves by the rate times sign(gradient)
        up, state = tx.update({"w": jnp.asarray(2.0)}, state, x)
        assert -float(up["w"]) == pytest.approx(float(rates[side](first_step + k)), rel=1e-4,
                                                abs=1e-12), (side, first_step, k)
  # The state a stage switch builds carries the run's step into its optimisers.
  state = ts.create_train_state(_g_params(), _d_params(), None, config, "full", first_step=150)
  grads = jax.tree.map(jnp.ones_like, state.g_params)
  up, _ = state.g_tx.update(grads, state.g_opt_state, state.g_params)
  assert -float(up["generator"]["to_rgb"]["bias"][0]) == pytest.approx(5e-4, rel=1e-4)
