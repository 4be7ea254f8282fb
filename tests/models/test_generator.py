"""G: official parity, converter bookkeeping, small configs, the batched modulated conv, bf16."""
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcavs_jax.convert.map_gan import convert_generator
from pcavs_jax.models import generator
from pcavs_jax.models.generator import Generator, ModulatedConv, generator_channels, start_size

PARITY_TOL = 1e-4
# bf16 compute vs fp32 on the tiny config (tanh output in [-1, 1]); measured ~0.05 / ~0.003.
BF16_MAX_TOL, BF16_MEAN_TOL = 0.1, 0.01
G_UNUSED = re.compile(r"^(style\.\d+\.|input\.input$|noises\.|.*\.blur\.kernel$|.*\.upsample\.kernel$)")


def _num_params(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def _init_shapes(g: Generator, batch: int = 1):
  s0, c0 = generator_channels(g.resolution, g.width)[0]
  return jax.eval_shape(g.init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((batch, g.style_dim), jnp.float32),
                        jax.ShapeDtypeStruct((batch, s0, s0, c0), jnp.float32))


def _tiny(resolution: int, dtype=jnp.float32, style_dim: int = 64) -> Generator:
  return Generator(resolution=resolution, width=0.125, style_dim=style_dim, dtype=dtype)


def _tiny_inputs(g: Generator, batch: int = 2, seed: int = 0):
  """Random style, identity map and variables (numpy-filled: jitted random init compiles slowly on CPU)."""
  s0, c0 = generator_channels(g.resolution, g.width)[0]
  rng = np.random.default_rng(seed)
  style = rng.standard_normal((batch, g.style_dim)).astype(np.float32)
  idmap = rng.standard_normal((batch, s0, s0, c0)).astype(np.float32)

  def fill(path, x):
    name = jax.tree_util.keystr(path)
    if "noise" in name:
      return np.zeros(x.shape, np.float32)
    value = rng.standard_normal(x.shape).astype(np.float32)
    if name.endswith("['modulation']['bias']"):
      return 1.0 + 0.1 * value
    return 0.1 * value if name.endswith("['bias']") else value

  variables = jax.tree_util.tree_map_with_path(fill, _init_shapes(g, batch))
  return variables, style, idmap


# ---------------------------------------------------------------- official parity (224)

@pytest.fixture(scope="module")
def official_g(official_weights):
  sd = official_weights.state_dict("G")
  params, unused = convert_generator(sd)
  return sd, params, unused


def test_parity_image(official_g, official_outputs):
  _, params, _ = official_g
  o = official_outputs
  style = np.concatenate([o["V_id_vector"], o["E_mouth_embed"], o["E_pose_code"]], axis=1)
  idmap = o["V_id_map"].transpose(0, 2, 3, 1)
  image = jax.jit(lambda p, s, m: Generator().apply({"params": p}, s, m))(params, style, idmap)
  ref = o["G_image_from_video_features"].transpose(0, 2, 3, 1)
  assert image.shape == ref.shape == (2, 224, 224, 3)
  err = float(np.max(np.abs(np.asarray(image) - ref)))
  assert err <= PARITY_TOL, err


def test_converter_unused_keys(official_g):
  sd, _, unused = official_g
  assert unused == sorted(k for k in sd if G_UNUSED.match(k))
  assert len(unused) == 8 * 2 + 1 + 11 + 5 + 5


def test_converter_rejects_other_fir_kernel(official_weights):
  sd = dict(official_weights.state_dict("G"))
  sd["convs.0.conv.blur.kernel"] = np.full((4, 4), 0.25, np.float32)
  with pytest.raises(ValueError, match="FIR"):
    convert_generator(sd)


def test_converter_rejects_wrong_resolution(official_weights):
  with pytest.raises(ValueError):
    convert_generator(official_weights.state_dict("G"), resolution=112)


def test_param_count_matches_official(official_weights):
  sd = official_weights.state_dict("G")
  official = sum(v.size for k, v in sd.items() if not G_UNUSED.match(k))
  variables = _init_shapes(Generator())
  assert set(variables) == {"params"}
  assert _num_params(variables["params"]) == official


# ---------------------------------------------------------------- small configs

@pytest.mark.parametrize("resolution,start,chans", [
    (64, 4, [64, 64, 64, 32, 16]),
    (56, 7, [64, 64, 32, 16]),
    (224, 7, [64, 64, 64, 64, 32, 16]),
])
def test_channel_plan(resolution, start, chans):
  assert start_size(resolution) == start
  plan = generator_channels(resolution, 0.125)
  assert [c for _, c in plan] == chans
  assert plan[-1][0] == resolution
  assert [c for _, c in generator_channels(224)] == [512, 512, 512, 512, 256, 128]


def test_generator_width_widens_only_g_and_the_identity_map():
  from pcavs_jax.models.config import model_config
  from pcavs_jax.models.pcavs import abstract_variables, build_model
  c = model_config(64, 0.125)
  c.feature_dim, c.mouth_dim, c.num_classes = 64, 64, 16
  shared = abstract_variables(build_model(c))["params"]
  c.generator_width = 0.25
  wide = abstract_variables(build_model(c))["params"]
  # Every G layer has twice the channels; the identity map follows G's first layer.
  assert wide["generator"]["convs_1"]["bias"].shape == (128,)
  assert shared["generator"]["convs_1"]["bias"].shape == (64,)
  assert wide["identity_encoder"]["conv1x1"]["kernel"].shape[-1] == 128
  assert shared["identity_encoder"]["conv1x1"]["kernel"].shape[-1] == 64
  # The other networks keep the shared width.
  for net in ("nonidentity_encoder", "audio_encoder"):
    assert jax.tree.map(lambda a: a.shape, wide[net]) == jax.tree.map(lambda a: a.shape, shared[net])
  assert (wide["identity_encoder"]["layer4_0"]["conv1"]["kernel"].shape
          == shared["identity_encoder"]["layer4_0"]["conv1"]["kernel"].shape)


def test_official_conversion_refuses_a_separate_generator_width(tmp_path):
  from pcavs_jax.models.config import model_config
  from pcavs_jax.convert.official import convert_official
  c = model_config()
  c.generator_width = 0.5
  with pytest.raises(ValueError, match="generator_width=0.5"):
    convert_official(tmp_path, c)


@pytest.mark.parametrize("resolution", [64, 56])
def test_small_shapes(resolution):
  g = _tiny(resolution)
  variables, style, idmap = _tiny_inputs(g)
  n_up = len(generator_channels(resolution, 0.125)) - 1
  names = set(variables["params"])
  assert names == ({"conv1", "to_rgb1"} | {f"convs_{i}" for i in range(2 * n_up)}
                   | {f"to_rgbs_{i}" for i in range(n_up)})
  image = jax.jit(g.apply)(variables, style, idmap)
  assert image.shape == (2, resolution, resolution, 3)
  assert image.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(image))) and float(jnp.max(jnp.abs(image))) <= 1.0


def test_noise_injection():
  g = _tiny(56)
  variables, style, idmap = _tiny_inputs(g)
  base = g.apply(variables, style, idmap)
  # Zero noise weights (as initialised): an rng changes nothing.
  same = g.apply(variables, style, idmap, rngs={"noise": jax.random.PRNGKey(1)})
  np.testing.assert_allclose(same, base, atol=1e-6)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.5 if "noise" in jax.tree_util.keystr(p) else x, variables["params"])
  quiet = g.apply({"params": params}, style, idmap)
  np.testing.assert_allclose(quiet, base, atol=1e-6)   # no rng: no noise
  a = g.apply({"params": params}, style, idmap, rngs={"noise": jax.random.PRNGKey(1)})
  b = g.apply({"params": params}, style, idmap, rngs={"noise": jax.random.PRNGKey(2)})
  assert float(jnp.max(jnp.abs(a - base))) > 1e-3
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_bfloat16_close_to_float32():
  g32, g16 = _tiny(56), _tiny(56, jnp.bfloat16)
  variables, style, idmap = _tiny_inputs(g32)
  a = g32.apply(variables, style, idmap)
  b = g16.apply(variables, style, idmap)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda x: x.dtype == jnp.float32, variables))
  err = jnp.abs(a - b.astype(jnp.float32))
  assert float(err.max()) <= BF16_MAX_TOL and float(err.mean()) <= BF16_MEAN_TOL, (
      float(err.max()), float(err.mean()))


# ---------------------------------------------------------------- batched modulated conv

def _naive_modulated_conv(params, x, style, upsample, demodulate):
  """The per-sample form: build B modulated kernels, one grouped (transposed) conv in torch."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  kernel = np.asarray(params["kernel"])                      # (k, k, in, out)
  k, _, cin, cout = kernel.shape
  b = x.shape[0]
  mod = params["modulation"]
  s = style @ (np.asarray(mod["kernel"]) / math.sqrt(style.shape[1])) + np.asarray(mod["bias"])
  w = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())[None] / math.sqrt(cin * k * k)
  w = w * torch.from_numpy(s)[:, None, :, None, None]        # (B, out, in, k, k)
  if demodulate:
    w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + 1e-8)[:, :, None, None, None]
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).reshape(1, b * cin, *x.shape[1:3])
  if upsample:
    wt = w.transpose(1, 2).reshape(b * cin, cout, k, k)
    out = F.conv_transpose2d(xt, wt, stride=2, padding=0, groups=b)
    fir = torch.tensor([1.0, 3.0, 3.0, 1.0])
    fir = (fir[:, None] * fir[None, :]) / 64 * 4
    out = F.conv2d(F.pad(out.reshape(b * cout, 1, *out.shape[2:]), [1, 1, 1, 1]),
                   fir.flip([0, 1])[None, None])
  else:
    out = F.conv2d(xt, w.reshape(b * cout, cin, k, k), padding=k // 2, groups=b)
  out = out.reshape(b, cout, *out.shape[2:])
  return out.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("upsample,demodulate,ksize", [
    (False, True, 3), (True, True, 3), (False, False, 1)])
def test_batched_modulated_conv_equals_grouped(upsample, demodulate, ksize):
  rng = np.random.default_rng(3)
  x = rng.standard_normal((3, 6, 6, 8)).astype(np.float32)
  style = rng.standard_normal((3, 16)).astype(np.float32)
  mod = ModulatedConv(5, ksize, demodulate=demodulate, upsample=upsample)
  shapes = jax.eval_shape(mod.init, jax.random.PRNGKey(0), x, style)["params"]
  params = jax.tree_util.tree_map(lambda t: rng.standard_normal(t.shape).astype(np.float32),
                                  shapes)
  params["modulation"]["bias"] = 1.0 + 0.3 * params["modulation"]["bias"]
  got = np.asarray(mod.apply({"params": params}, x, style))
  want = _naive_modulated_conv(params, x, style, upsample, demodulate)
  assert got.shape == want.shape == (3, 12 if upsample else 6, 12 if upsample else 6, 5)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def _reference_upconv_blur(x, w):
  """Transposed conv as a dilated conv with the flipped kernel, then a depthwise 4x4 blur."""
  from jax import lax
  nhwc = ("NHWC", "HWIO", "NHWC")
  y = lax.conv_general_dilated(x, w[::-1, ::-1], (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                               dimension_numbers=nhwc)
  c = y.shape[-1]
  k = np.tile(generator.blur_kernel(4.0)[:, :, None, None], (1, 1, 1, c))
  return lax.conv_general_dilated(y, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=nhwc,
                                  feature_group_count=c)


def _reference_upsample_rgb(x):
  """upfirdn2d(up=2, pads (2, 1)) as zero insertion then a depthwise blur."""
  from jax import lax
  c = x.shape[-1]
  k = np.tile(generator.blur_kernel(4.0)[:, :, None, None], (1, 1, 1, c))
  return lax.conv_general_dilated(x, k, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def test_subpixel_upconv_equals_transposed_conv_then_blur():
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32)
  w = rng.standard_normal((3, 3, 6, 4)).astype(np.float32)
  ours = np.asarray(generator.upconv_blur(jnp.asarray(x), jnp.asarray(w)))
  ref = np.asarray(_reference_upconv_blur(jnp.asarray(x), jnp.asarray(w)))
  assert ours.shape == ref.shape == (2, 10, 14, 4)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_rgb_upsample_equals_zero_insertion_then_blur():
  x = np.random.default_rng(4).standard_normal((2, 4, 6, 3)).astype(np.float32)
  ours = np.asarray(generator.upsample_rgb(jnp.asarray(x)))
  ref = np.asarray(_reference_upsample_rgb(jnp.asarray(x)))
  assert ours.shape == ref.shape == (2, 8, 12, 3)
  np.testing.assert_allclose(ours, ref, atol=1e-6)
