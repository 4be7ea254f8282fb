"""E_i, E_n, E_a: official parity, small-config shapes, bf16, parameter counts, BN under pmap."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcavs_jax.convert import map_encoders
from pcavs_jax.convert.layouts import KeyReader, unread_keys
from pcavs_jax.models.audio_encoder import AudioEncoder
from pcavs_jax.models.identity_encoder import IdentityEncoder
from pcavs_jax.models.layers import (adaptive_avg_pool_matrix, bilinear_matrix, block_diagonal_conv,
                                     grouped_conv_dense_grads)
from pcavs_jax.models.nonidentity_encoder import LUMA_WEIGHTS, NonIdentityEncoder, hourglass_depth

PARITY_ATOL = 1e-4
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _nhwc(x: np.ndarray) -> jnp.ndarray:
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def _max_err(got, want) -> float:
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.max(np.abs(got - want)))


def _convert(official_weights, net, convert):
  reader = KeyReader(official_weights.state_dict(net))
  params, stats, unused = convert(reader)
  assert unread_keys(reader, unused) == []
  return {"params": params, "batch_stats": stats}, unused


def _n_params(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------- parity


def test_identity_encoder_parity(official_weights, official_outputs):
  variables, unused = _convert(official_weights, "V", map_encoders.convert_identity_encoder)
  assert sorted(unused) == ["model.fc.bias", "model.fc.weight"]
  model = IdentityEncoder()
  out = jax.jit(model.apply)(variables, _nhwc(official_outputs["in_reference"]))
  errs = {
      "V_id_vector": _max_err(out["id_vector"], official_outputs["V_id_vector"]),
      "V_id_map": _max_err(out["id_map"], np.transpose(official_outputs["V_id_map"], (0, 2, 3, 1))),
      "V_class_scores": _max_err(out["class_scores"], official_outputs["V_class_scores"]),
  }
  print(errs)
  assert max(errs.values()) <= PARITY_ATOL, errs


def test_nonidentity_and_audio_encoder_parity(official_weights, official_outputs):
  e_vars, _ = _convert(official_weights, "E", map_encoders.convert_nonidentity_encoder)
  a_vars, _ = _convert(official_weights, "A_sync", map_encoders.convert_audio_encoder)
  e_model, a_model = NonIdentityEncoder(), AudioEncoder()
  out = jax.jit(e_model.apply)(e_vars, _nhwc(official_outputs["in_reference"]))
  audio = jax.jit(a_model.apply)(a_vars, _nhwc(official_outputs["in_spectrogram"]))
  audio_embed = e_model.apply(e_vars, audio, method=NonIdentityEncoder.embed_mouth)
  errs = {f"E_{k}": _max_err(out[k], official_outputs[f"E_{k}"])
          for k in ("feature", "mouth", "headpose", "mouth_embed", "pose_code")}
  errs["A_sync_feature"] = _max_err(audio, official_outputs["A_sync_feature"])
  errs["A_sync_mouth_embed"] = _max_err(audio_embed, official_outputs["A_sync_mouth_embed"])
  print(errs)
  assert max(errs.values()) <= PARITY_ATOL, errs


@pytest.mark.parametrize("net,model,unused", [
    ("V", IdentityEncoder(), map_encoders.IDENTITY_UNUSED),
    ("E", NonIdentityEncoder(), ()),
    ("A_sync", AudioEncoder(), ()),
])
def test_parameter_count_matches_official(parity_dir, net, model, unused):
  with open(parity_dir / "official_keys.json") as f:
    shapes = json.load(f)["networks"][net]
  want = sum(int(np.prod(s)) for k, s in shapes.items()
             if k.rsplit(".", 1)[-1] not in _BN_STATS and k not in unused)
  want_stats = sum(int(np.prod(s)) for k, s in shapes.items()
                   if k.rsplit(".", 1)[-1] in ("running_mean", "running_var"))
  x = jnp.zeros((1, 80, 20, 1)) if net == "A_sync" else jnp.zeros((1, 224, 224, 3))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  assert _n_params(variables["params"]) == want
  assert _n_params(variables["batch_stats"]) == want_stats


# ----------------------------------------------------------------------------- helpers


def test_resize_matrices_match_torch():
  torch = pytest.importorskip("torch")
  f = torch.nn.functional
  for n_in, n_out in [(2, 7), (7, 7), (14, 7), (9, 4), (3, 7), (7, 14), (1, 2)]:
    x = torch.eye(n_in)[None, None]   # (1, 1, n_in, n_in): columns are unit impulses
    pool = f.adaptive_avg_pool2d(x, (n_out, n_in))[0, 0].numpy()
    np.testing.assert_allclose(adaptive_avg_pool_matrix(n_in, n_out), pool, atol=1e-6)
    up = f.interpolate(x, size=(n_out, n_in), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(bilinear_matrix(n_in, n_out), up, atol=1e-6)


def test_hourglass_depth():
  assert hourglass_depth(56) == 4    # 224 px
  assert hourglass_depth(16) == 4    # 64 px
  assert hourglass_depth(14) == 3    # 56 px: 14, 7, 3, 1


# ----------------------------------------------------------------------------- grouped convs


@pytest.mark.parametrize("groups,stride,layout", [(4, 1, ("NHWC", "HWIO", "NHWC")),
                                                  (4, 2, ("NHWC", "HWIO", "NHWC")),
                                                  (8, 1, ("NCHW", "OIHW", "NCHW"))])
def test_dense_form_grouped_convs_match_grouped_conv(groups, stride, layout):
  rng = np.random.default_rng(0)
  channels_last = layout[0] == "NHWC"
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 16) if channels_last else (2, 16, 9, 9)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 16 // groups, 24) if channels_last
                             else (24, 16 // groups, 3, 3)), jnp.float32)

  def loss(conv, x, w):
    y = conv(x, w, (stride, stride), ((1, 1), (1, 1)), feature_group_count=groups,
             dimension_numbers=layout, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(jnp.sin(y)), y

  (_, want), want_grads = jax.value_and_grad(
      lambda x, w: loss(jax.lax.conv_general_dilated, x, w), (0, 1), has_aux=True)(x, w)
  for conv in (block_diagonal_conv, grouped_conv_dense_grads):
    (_, got), got_grads = jax.jit(jax.value_and_grad(
        lambda x, w: loss(conv, x, w), (0, 1), has_aux=True))(x, w)
    np.testing.assert_allclose(got, want, atol=1e-4)
    for g, w_ in zip(got_grads, want_grads):
      np.testing.assert_allclose(g, w_, atol=1e-4)


def test_identity_encoder_dense_gradients_same_parameters_outputs_and_gradients():
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
  kw = dict(num_classes=16, map_size=4, map_channels=32, **_SMALL)
  grouped, dense = (IdentityEncoder(grouped_conv_grads="native", **kw),
                    IdentityEncoder(grouped_conv_grads="dense", **kw))
  variables = grouped.init(jax.random.PRNGKey(0), x)
  assert (jax.tree.map(jnp.shape, dense.init(jax.random.PRNGKey(0), x))
          == jax.tree.map(jnp.shape, variables))
  assert variables["params"]["layer1_0"]["conv2"]["kernel"].shape[2] == 4   # 16 / 4 groups

  def loss(model, params):
    out = model.apply({**variables, "params": params}, x)
    return jnp.sum(out["id_vector"] ** 2) + jnp.sum(out["id_map"])

  def close(a, b):   # float32 sums in another order: relative to the leaf's largest entry
    assert np.max(np.abs(a - b)) <= 1e-4 * np.max(np.abs(b)) + 1e-6

  for model in (grouped, dense):
    np.testing.assert_allclose(model.apply(variables, x)["id_vector"],
                               grouped.apply(variables, x)["id_vector"], atol=1e-4)
  want, got = (jax.grad(loss, 1)(m, variables["params"]) for m in (grouped, dense))
  jax.tree.map(close, got, want)
  with pytest.raises(ValueError, match="grouped_conv_grads must be one of"):
    IdentityEncoder(grouped_conv_grads="fast", **kw).init(jax.random.PRNGKey(0), x)


# ----------------------------------------------------------------------------- small configs

_SMALL = dict(width=0.125)
_SMALL_E = dict(width=0.125, feature_dim=32, mouth_dim=20, pose_dim=12, num_classes=16)


@pytest.mark.parametrize("resolution", [64, 56])
def test_small_identity_encoder_shapes(resolution):
  model = IdentityEncoder(num_classes=16, map_channels=64, **_SMALL)
  x = jnp.zeros((1, resolution, resolution, 3))
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x)[0])
  assert out["id_vector"].shape == (1, 256)
  assert out["id_map"].shape == (1, 7, 7, 64)
  assert out["class_scores"].shape == (1, 16)


@pytest.mark.parametrize("resolution", [64, 56])
def test_small_nonidentity_encoder_shapes(resolution):
  model = NonIdentityEncoder(resolution=resolution, clip_len=2, **_SMALL_E)
  x = jnp.zeros((2, resolution, resolution, 3))
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x))
  assert {k: v.shape for k, v in out.items()} == {
      "feature": (2, 32), "mouth": (2, 32), "headpose": (2, 32), "mouth_embed": (2, 20),
      "pose_code": (2, 12)}
  assert variables["params"]["fan"]["fc"]["kernel"].shape == ((resolution // 8) ** 2, 32)
  scores = jax.eval_shape(lambda v, m: model.apply(v, m, method=model.classify_mouth),
                          variables, jnp.zeros((4, 32)))
  assert scores.shape == (2, 16)
  scores = jax.eval_shape(lambda v, p: model.apply(v, p, method=model.classify_pose),
                          variables, jnp.zeros((2, 24)))
  assert scores.shape == (2, 16)


def test_grayscale_nonidentity_encoder_reads_luminance_only():
  rng = np.random.default_rng(0)
  frames = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  # A chroma change that keeps every pixel's luminance: move along a direction orthogonal to
  # the luma weights.
  chroma = np.cross(np.asarray(LUMA_WEIGHTS), [1.0, 0.0, 0.0]).astype(np.float32)
  recoloured = frames + 0.3 * chroma
  color = NonIdentityEncoder(resolution=64, **_SMALL_E)
  variables = _random_variables(color, frames)
  gray = color.clone(grayscale=True)
  codes = lambda model, x: np.asarray(model.apply(variables, x)["pose_code"])
  np.testing.assert_allclose(codes(gray, recoloured), codes(gray, frames), atol=1e-5)
  assert np.abs(codes(color, recoloured) - codes(color, frames)).max() > 1e-3


def test_small_audio_encoder_shapes():
  model = AudioEncoder(width=0.125, feature_dim=32, num_classes=16)
  out, variables = jax.eval_shape(
      lambda: model.init_with_output(jax.random.PRNGKey(0), jnp.zeros((2, 80, 20))))
  assert out.shape == (2, 32)
  assert variables["params"]["se_resnet"]["attention_conv1"]["kernel"].shape == (1, 320, 16)
  scores = jax.eval_shape(lambda v, f: model.apply(v, f, method=model.classify), variables, out)
  assert scores.shape == (2, 16)


# ----------------------------------------------------------------------------- bf16, training

# max |bf16 - fp32| / max |fp32| per output. Measured on these configs: E_i <= 0.016,
# E_n <= 0.066 (about 40 BN-ReLU-conv layers deep, plus the hourglass sums), E_a 0.008.
BF16_RTOL = {"IdentityEncoder": 0.04, "NonIdentityEncoder": 0.12, "AudioEncoder": 0.04}


def _random_variables(model, *args, seed: int = 0):
  """Variables of `model` filled with numpy random values (cheap: no XLA-compiled init)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = getattr(path[-1], "key", "")
    shape = leaf.shape
    if name == "var":
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if name == "scale":
      return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if name in ("bias", "mean"):
      return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_bf16_close_to_fp32_small_configs():
  key = jax.random.PRNGKey(1)
  images = jax.random.uniform(key, (2, 64, 64, 3), minval=-1.0, maxval=1.0)
  mel = jax.random.uniform(key, (2, 80, 20))
  cases = [
      (lambda dt: IdentityEncoder(num_classes=16, map_channels=32, dtype=dt, **_SMALL), images),
      (lambda dt: NonIdentityEncoder(resolution=64, dtype=dt, **_SMALL_E), images),
      (lambda dt: AudioEncoder(width=0.125, feature_dim=32, num_classes=16, dtype=dt), mel),
  ]
  for make, x in cases:
    variables = _random_variables(make(jnp.float32), x)
    ref = jax.jit(make(jnp.float32).apply)(variables, x)
    low = jax.jit(make(jnp.bfloat16).apply)(variables, x)
    for (path, r), l in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(low)):
      assert l.dtype == jnp.bfloat16
      rel = _max_err(l, r) / float(jnp.max(jnp.abs(r)))
      name = type(make(jnp.float32)).__name__
      assert rel <= BF16_RTOL[name], (name, jax.tree_util.keystr(path), rel)


def test_train_mode_bn_pmap_and_dropout():
  """Training mode: BN batch statistics synced over a pmap axis, E_n's dropout rng."""
  model = NonIdentityEncoder(resolution=64, bn_axis_name="batch", **_SMALL_E)
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 64, 64, 3), minval=-1.0, maxval=1.0)
  variables = _random_variables(NonIdentityEncoder(resolution=64, **_SMALL_E), x[0])

  def step(v, images, rng):
    return model.apply(v, images, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])

  p_step = jax.pmap(step, axis_name="batch", in_axes=(None, 0, 0))
  out, updates = p_step(variables, x, jax.random.PRNGKey(2)[None])
  assert out["feature"].shape == (1, 2, 32)
  assert np.all(np.isfinite(out["pose_code"]))
  before = variables["batch_stats"]["fan"]["bn1"]["mean"]
  after = updates["batch_stats"]["fan"]["bn1"]["mean"][0]
  assert not np.allclose(before, after)
  other, _ = p_step(variables, x, jax.random.PRNGKey(3)[None])
  assert not np.allclose(out["feature"], other["feature"])   # dropout follows the rng


def test_audio_encoder_train_mode():
  model = AudioEncoder(width=0.125, feature_dim=32, num_classes=16)
  mel = jax.random.uniform(jax.random.PRNGKey(0), (2, 80, 20, 1))
  variables = _random_variables(model, mel)
  out, updates = jax.jit(lambda v, m: model.apply(v, m, train=True, mutable=["batch_stats"]))(
      variables, mel)
  assert out.shape == (2, 32) and np.all(np.isfinite(out))
  stats = updates["batch_stats"]["se_resnet"]["attention_bn"]["mean"]
  assert not np.allclose(stats, variables["batch_stats"]["se_resnet"]["attention_bn"]["mean"])
