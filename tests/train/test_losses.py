"""Losses: parity with the official loss code on known tensors, and their defining properties."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcavs_jax.train import losses

RTOL = 1e-5


def _nhwc(x: np.ndarray) -> jnp.ndarray:
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def _d_outputs(data, kind: str) -> list[list[jnp.ndarray]]:
  return [[_nhwc(data[f"{kind}_s{s}_l{j}"]) for j in range(6)] for s in range(2)]


@pytest.fixture(scope="module")
def official_losses(parity_dir):
  return dict(np.load(parity_dir / "official_losses.npz"))


def _parity_values(d) -> dict[str, jnp.ndarray]:
  fake, real = _d_outputs(d, "fake"), _d_outputs(d, "real")
  visual, audio = jnp.asarray(d["in_visual_mouth"]), jnp.asarray(d["in_audio_mouth"])
  scores, labels = jnp.asarray(d["in_class_scores"]), jnp.asarray(d["in_labels"])
  return {
      "out_D_fake": losses.hinge_d_loss(fake, real=False),
      "out_D_real": losses.hinge_d_loss(real, real=True),
      "out_G_gan": losses.hinge_g_loss(fake),
      "out_G_feature_matching": losses.feature_matching_loss(fake, real, 10.0, 1.0),
      "out_contrastive_visual_audio": losses.softmax_contrastive_loss(visual, audio),
      "out_contrastive_audio_visual": losses.softmax_contrastive_loss(audio, visual),
      "out_crossmodal_l1": losses.l1_loss(visual, audio),
      "out_cross_entropy": losses.cross_entropy_loss(scores, labels),
      "out_l2_softmax_uniform": losses.softmax_uniform_loss(scores),
  }


def test_official_parity(official_losses):
  ours = _parity_values(official_losses)
  expected_keys = {k for k in official_losses if k.startswith("out_")}
  assert set(ours) == expected_keys
  errors = {}
  for key, value in ours.items():
    want = float(official_losses[key].reshape(()))
    errors[key] = abs(float(value) - want) / abs(want)
  print("relative errors:", {k: f"{v:.2e}" for k, v in errors.items()})
  bad = {k: v for k, v in errors.items() if v > RTOL}
  assert not bad, bad


def test_sync_loss_matches_official_terms(official_losses):
  v = jnp.asarray(official_losses["in_visual_mouth"])
  a = jnp.asarray(official_losses["in_audio_mouth"])
  total, terms = losses.sync_loss(v, a, contrastive_weight=100.0, l1_weight=1.0)
  np.testing.assert_allclose(terms["sync_l1"], official_losses["out_crossmodal_l1"][0], rtol=RTOL)
  np.testing.assert_allclose(terms["sync_contrastive_va"],
                             100 * official_losses["out_contrastive_visual_audio"][0], rtol=RTOL)
  np.testing.assert_allclose(terms["sync_contrastive_av"],
                             100 * official_losses["out_contrastive_audio_visual"][0], rtol=RTOL)
  np.testing.assert_allclose(total, sum(terms.values()), rtol=1e-6)


def _random_d_outputs(seed, batch=2, scales=2):
  rng = np.random.default_rng(seed)
  out = []
  for s in range(scales):
    size = 16 // 2**s
    shapes = [(batch, size, size, 3), (batch, size // 2, size // 2, 4), (batch, 4, 4, 8),
              (batch, 3, 3, 8), (batch, 3, 3, 8), (batch, 2, 2, 1)]
    out.append([jnp.asarray(rng.normal(size=shp), jnp.float32) for shp in shapes])
  return out


_fm = jax.jit(losses.feature_matching_loss)
_hinge_d = jax.jit(losses.hinge_d_loss, static_argnames="real")
_hinge_g = jax.jit(losses.hinge_g_loss)


def test_hinge_and_feature_matching_properties():
  fake = _random_d_outputs(0)
  real = _random_d_outputs(1)
  assert float(_fm(fake, fake)) == 0.0
  assert float(_fm(fake, real)) > 0.0
  # Logits are left out: changing them changes nothing.
  moved = [scale[:-1] + [scale[-1] + 5.0] for scale in fake]
  np.testing.assert_allclose(_fm(moved, real), _fm(fake, real), rtol=1e-6)
  # Confident D: no hinge loss beyond the margin.
  sure = [scale[:-1] + [jnp.full_like(scale[-1], 3.0)] for scale in real]
  assert float(_hinge_d(sure, real=True)) == 0.0
  assert float(_hinge_d(sure, real=False)) == pytest.approx(4.0)
  assert float(_hinge_g(sure)) == pytest.approx(-3.0)
  # A bare array is one scale of logits.
  assert float(_hinge_d(jnp.full((2, 3, 3, 1), -2.0), real=False)) == 0.0


def test_feature_matching_gradient_only_reaches_fake():
  fake = _random_d_outputs(0)
  real = _random_d_outputs(1)
  g_fake, g_real = jax.jit(jax.grad(losses.feature_matching_loss, argnums=(0, 1)))(fake, real)
  assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree.leaves(g_real))
  assert float(jnp.abs(g_fake[0][0]).sum()) > 0.0
  assert float(jnp.abs(g_fake[0][-1]).sum()) == 0.0   # logits get nothing


def test_sync_loss_detaches_the_compared_side():
  rng = np.random.default_rng(3)
  v, a = (jnp.asarray(rng.normal(size=(6, 16)), jnp.float32) for _ in range(2))

  def term(name):
    return jax.jit(jax.grad(lambda v, a: losses.sync_loss(v, a)[1][name], argnums=(0, 1)))

  gv, ga = term("sync_contrastive_va")(v, a)
  assert float(jnp.abs(gv).sum()) == 0.0 and float(jnp.abs(ga).sum()) > 0.0
  gv, ga = term("sync_contrastive_av")(v, a)
  assert float(jnp.abs(ga).sum()) == 0.0 and float(jnp.abs(gv).sum()) > 0.0
  gv, ga = term("sync_l1")(v, a)
  assert float(jnp.abs(gv).sum()) == 0.0 and float(jnp.abs(ga).sum()) > 0.0
  # Only weighted terms are present.
  assert set(losses.sync_loss(v, a, contrastive_weight=0.0)[1]) == {"sync_l1"}


def test_contrastive_prefers_matched_pairs_and_stays_finite():
  x = jnp.asarray(np.random.default_rng(4).normal(size=(5, 8)), jnp.float32)
  shuffled = jnp.roll(x, 1, axis=0)
  loss = jax.jit(losses.softmax_contrastive_loss)
  assert float(loss(x, x * 2.0)) < 1e-3   # scale-free, near 0
  assert float(loss(x, shuffled)) > 1.0
  grads = jax.jit(jax.grad(losses.softmax_contrastive_loss, argnums=1))(x, x)  # coincident
  assert bool(jnp.all(jnp.isfinite(grads)))
  # An all-zero feature row (a ReLU mouth feature of a fresh E_n can be one) keeps gradients
  # finite in both directions, and normalises like torch's F.normalize (to zero).
  zero_row = x.at[2].set(0.0)
  for argnums in (0, 1):
    grads = jax.jit(jax.grad(losses.softmax_contrastive_loss, argnums=argnums))(zero_row, x)
    assert bool(jnp.all(jnp.isfinite(grads))), argnums
  normalised = losses.l2_normalize(zero_row)
  assert float(jnp.abs(normalised[2]).max()) == 0.0
  np.testing.assert_allclose(np.linalg.norm(np.asarray(normalised)[[0, 1, 3, 4]], axis=-1), 1.0, rtol=1e-6)


def test_uniform_and_cross_entropy_limits():
  assert float(losses.softmax_uniform_loss(jnp.zeros((3, 7)))) == pytest.approx(0.0, abs=1e-12)
  scores = jnp.array([[10.0, -10.0], [-10.0, 10.0]])
  assert float(losses.cross_entropy_loss(scores, jnp.array([0, 1]))) < 1e-6
  assert float(losses.cross_entropy_loss(jnp.zeros((2, 4)), jnp.array([0, 3]))) == \
      pytest.approx(np.log(4), rel=1e-6)


def test_cosine_contrastive_logits_are_bounded_scaled_cosines():
  b, scale = 6, 10.0
  x = jnp.eye(b, 16) * 3.0                      # orthogonal rows; the norm must not matter
  # Matched orthogonal pairs at scale 2: diagonal logits 2, the others 0.
  expected = np.log1p((b - 1) * np.exp(-2.0))
  got = losses.softmax_contrastive_loss(x, x, cosine_scale=2.0)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)
  # Near-identical untrained features: inverse-distance logits explode, scaled cosines do not.
  rng = np.random.default_rng(0)
  base = rng.normal(size=(1, 16))
  v, a = (jnp.asarray(base + 1e-4 * rng.normal(size=(b, 16)), jnp.float32) for _ in range(2))
  assert float(jnp.max(losses.pairwise_inverse_distance(v, a))) > 1e3
  assert float(jnp.max(jnp.abs(losses.pairwise_scaled_cosine(v, a, scale)))) <= scale + 1e-4
  total, terms = losses.sync_loss(v, a, cosine_scale=scale)
  assert np.isfinite(float(total)) and {"sync_contrastive_va", "sync_contrastive_av"} <= set(terms)
  # An all-zero row (every ReLU of a fresh `to_mouth` off) gets a gradient of at most
  # scale / norm_floor, not torch's 1 / 1e-12 per unit of upstream gradient.
  zero_row = v.at[1].set(0.0)
  grad = jax.grad(losses.softmax_contrastive_loss)(zero_row, a, cosine_scale=scale)
  assert 0.0 < float(jnp.linalg.norm(grad[1])) <= scale / 1e-2


def test_box_l1_sees_only_the_box():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 20, 10, 3)).astype(np.float32)
  box = (0.25, 0.5, 0.2, 0.8)                       # rows 5:10, cols 2:8
  inside = x.copy()
  inside[:, 5:10, 2:8] += 1.5
  outside = x.copy()
  outside[:, :5] -= 2.0
  outside[:, 10:] += 2.0
  outside[:, :, :2] += 3.0
  assert float(losses.box_l1_loss(jnp.asarray(inside), jnp.asarray(x), box)) == pytest.approx(1.5)
  assert float(losses.box_l1_loss(jnp.asarray(outside), jnp.asarray(x), box)) == 0.0
  # A box thinner than a pixel still holds one row.
  thin = losses.box_l1_loss(jnp.asarray(inside), jnp.asarray(x), (0.3, 0.31, 0.2, 0.8))
  assert float(thin) == pytest.approx(1.5)
  for bad in ((0.5, 0.25, 0.2, 0.8), (0.1, 0.5, -0.1, 0.8), (0.1, 1.2, 0.2, 0.8)):
    with pytest.raises(ValueError, match="box"):
      losses.box_l1_loss(jnp.asarray(x), jnp.asarray(x), bad)


def test_ssim_loss_matches_skimage_and_rewards_structure():
  from skimage.metrics import structural_similarity
  rng = np.random.default_rng(6)
  truth = np.clip(rng.normal(0, 0.5, size=(2, 32, 32, 3)), -1, 1).astype(np.float32)
  noisy = np.clip(truth + rng.normal(0, 0.3, size=truth.shape), -1, 1).astype(np.float32)
  # The same statistic, computed independently: skimage's 7 x 7 window, population covariance.
  expected = np.mean([1 - structural_similarity(n, t, channel_axis=-1, data_range=2.0,
                                                use_sample_covariance=False)
                      for n, t in zip(noisy, truth)])
  got = float(losses.ssim_loss(jnp.asarray(noisy), jnp.asarray(truth)))
  assert got == pytest.approx(expected, abs=1e-4)
  assert float(losses.ssim_loss(jnp.asarray(truth), jnp.asarray(truth))) == pytest.approx(0, abs=1e-6)
  # A flat grey frame loses the structure that a noisy one keeps, although its L1 is similar.
  grey = np.full_like(truth, truth.mean())
  assert float(losses.ssim_loss(jnp.asarray(grey), jnp.asarray(truth))) > got
  grad = jax.grad(losses.ssim_loss)(jnp.asarray(grey), jnp.asarray(truth))
  assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).max()) > 0
