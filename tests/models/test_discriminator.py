"""D: official parity, converter, parameter count, small config, spectral-norm state, bf16."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcavs_jax.convert.map_gan import convert_discriminator
from pcavs_jax.models.discriminator import MultiscaleDiscriminator, downsample

PARITY_TOL = 1e-4
BF16_REL_TOL = 0.05   # max |bf16 - fp32| / max |fp32| per output on the tiny config (~0.01 measured)


def _num_params(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def _tiny_variables(d: MultiscaleDiscriminator, images: np.ndarray, seed: int = 0):
  """Random variables filled in numpy (jitted random init compiles slowly on CPU)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(d.init, jax.random.PRNGKey(0), images)

  def fill(path, x):
    name = jax.tree_util.keystr(path)
    value = rng.standard_normal(x.shape).astype(np.float32)
    if name.endswith("['u']") or name.endswith("['v']"):
      return value / np.linalg.norm(value)
    if name.endswith("['kernel']"):
      return value / np.sqrt(np.prod(x.shape[:-1]))
    return 0.1 * value

  return jax.tree_util.tree_map_with_path(fill, shapes)


# ---------------------------------------------------------------- official parity

@pytest.fixture(scope="module")
def official_d(official_weights, official_outputs):
  params, stats = convert_discriminator(official_weights.state_dict("D"))
  images = official_outputs["inference_driven_pose"][:1].transpose(0, 2, 3, 1)
  outs = jax.jit(lambda v, x: MultiscaleDiscriminator().apply(v, x))(
      {"params": params, "batch_stats": stats}, images)
  return images, outs


@pytest.mark.parametrize("scale", [0, 1])
def test_parity_logits(official_d, official_outputs, scale):
  _, outs = official_d
  ref = official_outputs[f"D_scale{scale}_logits"].transpose(0, 2, 3, 1)
  assert outs[scale][-1].shape == ref.shape
  err = float(np.max(np.abs(np.asarray(outs[scale][-1]) - ref)))
  assert err <= PARITY_TOL, err


@pytest.mark.parametrize("scale", [0, 1])
def test_parity_intermediate_mean_abs(official_d, official_outputs, scale):
  images, outs = official_d
  assert len(outs[scale]) == 6
  if scale == 0:
    np.testing.assert_array_equal(outs[0][0], images)
  for j in range(5):
    got = np.mean(np.abs(np.asarray(outs[scale][j + 1])), axis=(0, 1, 2))
    ref = official_outputs[f"D_scale{scale}_layer{j}_mean_abs"]
    err = float(np.max(np.abs(got - ref)))
    assert err <= PARITY_TOL, (j, err)


def test_param_count_matches_official(official_weights):
  sd = official_weights.state_dict("D")
  official = sum(v.size for k, v in sd.items() if not k.endswith(("weight_u", "weight_v")))
  state = sum(v.size for k, v in sd.items() if k.endswith(("weight_u", "weight_v")))
  shapes = jax.eval_shape(MultiscaleDiscriminator().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert set(shapes) == {"params", "batch_stats"}
  assert _num_params(shapes["params"]) == official
  assert _num_params(shapes["batch_stats"]) == state
  params, stats = convert_discriminator(sd)
  same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, shapes,
                                {"params": params, "batch_stats": stats})
  assert all(jax.tree_util.tree_leaves(same))


def test_converter_rejects_unknown_keys(official_weights):
  sd = dict(official_weights.state_dict("D"))
  sd["discriminator_0.model1.0.0.bias"] = np.zeros(128, np.float32)
  with pytest.raises(ValueError, match="not understood"):
    convert_discriminator(sd)


# ---------------------------------------------------------------- small config

@pytest.fixture(scope="module")
def tiny():
  d = MultiscaleDiscriminator(num_scales=2, num_layers=4, base_channels=16)
  images = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  return d, images, _tiny_variables(d, images)


def test_small_shapes(tiny):
  d, images, variables = tiny
  outs = jax.jit(d.apply)(variables, images)
  shapes = [[o.shape for o in scale] for scale in outs]
  assert shapes == [
      [(2, 64, 64, 3), (2, 33, 33, 16), (2, 17, 17, 32), (2, 9, 9, 64), (2, 10, 10, 128),
       (2, 11, 11, 1)],
      [(2, 32, 32, 3), (2, 17, 17, 16), (2, 9, 9, 32), (2, 5, 5, 64), (2, 6, 6, 128),
       (2, 7, 7, 1)],
  ]
  np.testing.assert_allclose(outs[1][0], downsample(jnp.asarray(images)))


def test_downsample_excludes_padding():
  x = jnp.ones((1, 6, 6, 2))
  np.testing.assert_allclose(downsample(x), jnp.ones((1, 3, 3, 2)))
  ramp = jnp.arange(4.0).reshape(1, 2, 2, 1)
  # Window at (0, 0) covers the in-image pixels (0,0),(0,1),(1,0),(1,1) only.
  np.testing.assert_allclose(downsample(ramp)[0, 0, 0, 0], 1.5)


def test_power_iteration_matches_torch_rule(tiny):
  """train=True runs torch's update v = W^T u, u = W v (normalised) once per call."""
  d, images, variables = tiny
  step = jax.jit(lambda v: d.apply(v, images, train=True, mutable=["batch_stats"])[1])
  stats = variables["batch_stats"]
  steps = 30
  for _ in range(steps):
    stats = step({"params": variables["params"], "batch_stats": stats})["batch_stats"]
  for name in ("model1", "model2", "model3"):
    kernel = np.asarray(variables["params"]["discriminator_0"][name]["kernel"], np.float64)
    w = kernel.reshape(-1, kernel.shape[-1]).T               # (out, kh*kw*in)
    u = np.asarray(variables["batch_stats"]["discriminator_0"][name]["u"], np.float64)
    for _ in range(steps):
      v = w.T @ u
      v /= np.linalg.norm(v)
      u = w @ v
      u /= np.linalg.norm(u)
    got = stats["discriminator_0"][name]
    np.testing.assert_allclose(got["u"], u, atol=1e-4)
    np.testing.assert_allclose(got["v"], v, atol=1e-4)
    sigma = float(np.asarray(got["u"]) @ w @ np.asarray(got["v"]))
    assert 0.97 * np.linalg.norm(w, 2) <= sigma <= np.linalg.norm(w, 2) * (1 + 1e-5)
  # Eval mode leaves the state alone and is deterministic.
  evaluated = {"params": variables["params"], "batch_stats": stats}
  a = d.apply(evaluated, images)
  b = d.apply(evaluated, images)
  np.testing.assert_array_equal(a[0][-1], b[0][-1])


def test_bfloat16_close_to_float32(tiny):
  d, images, variables = tiny
  d16 = MultiscaleDiscriminator(num_scales=2, num_layers=4, base_channels=16,
                                dtype=jnp.bfloat16)
  a = d.apply(variables, images)
  b = d16.apply(variables, images)
  for sa, sb in zip(a, b):
    for x, y in zip(sa, sb):
      assert y.dtype == jnp.float32
      rel = float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(x)))
      assert rel <= BF16_REL_TOL, rel
