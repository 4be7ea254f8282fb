"""Key maps for the official G (`ModulateGenerator`) and D (`MultiscaleDiscriminator`).

G: the modulated weight (1, out, in, k, k) becomes a (k, k, in, out) kernel stored exactly as
the official tensor (no flip): `ModulatedConv` itself applies the transposed-convolution
semantics (flip + input dilation) for the up-convolutions. The official 8-layer style MLP,
the constant input and the fixed noise buffers are unused by PC-AVS and have no counterpart;
the FIR blur buffers are checked against the fixed kernel and dropped.

D: spectral-norm convs keep `weight_orig` as the kernel; `weight_u`, `weight_v` become the
`batch_stats` state `u`, `v` (v reordered from torch's (in, kh, kw) flattening to the
kernel's (kh, kw, in) flattening).
"""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pcavs_jax.convert.layouts import (KeyReader, StateDict, as_reader, conv_kernel, linear_kernel,
                                      unread_keys)
from pcavs_jax.models import generator as gen

Params = dict[str, Any]

# Official G keys with no Flax counterpart (style MLP, constant input, noise buffers).
_G_UNUSED = re.compile(r"^(style\.\d+\.(weight|bias)|input\.input|noises\.noise_\d+)$")
# Fixed FIR buffers: verified, then dropped.
_G_FIR = re.compile(r"^(convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel)$")


def _modulated_conv(r: KeyReader, key: str) -> Params:
  w = r(key + ".weight")
  if w.ndim != 5 or w.shape[0] != 1:
    raise ValueError(f"{key}.weight: expected a (1, out, in, k, k) modulated weight, "
                     f"got {w.shape}")
  return {"kernel": conv_kernel(w[0]),
          "modulation": {"kernel": linear_kernel(r(key + ".modulation.weight")),
                         "bias": r(key + ".modulation.bias")}}


def _styled_conv(r: KeyReader, key: str) -> Params:
  return {"conv": _modulated_conv(r, key + ".conv"),
          "noise": {"weight": r(key + ".noise.weight").reshape(())},
          "bias": r(key + ".activate.bias").reshape(-1)}


def _to_rgb(r: KeyReader, key: str) -> Params:
  return {"conv": _modulated_conv(r, key + ".conv"), "bias": r(key + ".bias").reshape(-1)}


def _shapes(tree: Params) -> dict[str, tuple[int, ...]]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): tuple(x.shape) for path, x in leaves}


def _check_shapes(params: Params, expected: Params, what: str) -> None:
  got, want = _shapes(params), _shapes(expected)
  if got != want:
    diff = sorted(set(got.items()) ^ set(want.items()))[:6]
    raise ValueError(f"converted {what} does not match the Flax module; first differences "
                     f"(path, shape): {diff}")


def convert_generator(state_dict: StateDict | KeyReader, resolution: int = 224,
                      width: float = 1.0) -> tuple[Params, list[str]]:
  """Official netG state dict -> `Generator` params.

  Args:
    state_dict: {torch key: numpy array} of `<epoch>_net_G.pth`.
    resolution, width: the `Generator` configuration the weights are for.

  Returns:
    (params, unused_keys): the `params` collection of
    `Generator(resolution, width, style_dim)`, and the sorted official keys deliberately left
    out (style MLP, constant input, noise buffers, verified FIR buffers).

  Raises:
    KeyError: a tensor the Flax generator needs is missing.
    ValueError: a stored FIR kernel differs from outer([1,3,3,1]) / 64 * 4, an official key is
      not understood, or the shapes do not fit the configuration.
  """
  r = as_reader(state_dict)
  state_dict = r.state_dict
  unused = []
  fir = gen.blur_kernel(4.0)
  for key in state_dict:
    if _G_FIR.match(key):
      if not np.allclose(np.asarray(state_dict[key], np.float32), fir, rtol=0, atol=1e-7):
        raise ValueError(f"{key}: FIR kernel differs from outer([1,3,3,1])/64*4; this "
                         f"generator only supports the fixed kernel")
      unused.append(key)
    elif _G_UNUSED.match(key):
      unused.append(key)

  chans = gen.generator_channels(resolution, width)
  params: Params = {"conv1": _styled_conv(r, "conv1"), "to_rgb1": _to_rgb(r, "to_rgb1")}
  for i in range(len(chans) - 1):
    params[f"convs_{2 * i}"] = _styled_conv(r, f"convs.{2 * i}")
    params[f"convs_{2 * i + 1}"] = _styled_conv(r, f"convs.{2 * i + 1}")
    params[f"to_rgbs_{i}"] = _to_rgb(r, f"to_rgbs.{i}")

  extra = unread_keys(r, unused)
  if extra:
    raise ValueError(f"official G keys not understood (wrong resolution?): {extra[:8]}")

  style_dim = params["conv1"]["conv"]["modulation"]["kernel"].shape[0]
  s0, c0 = chans[0]
  model = gen.Generator(resolution=resolution, width=width, style_dim=style_dim)
  expected = jax.eval_shape(
      model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, style_dim), jnp.float32),
      jax.ShapeDtypeStruct((1, s0, s0, c0), jnp.float32))["params"]
  _check_shapes(params, expected, "generator")
  return params, sorted(unused)


def convert_discriminator(state_dict: StateDict | KeyReader) -> tuple[Params, Params]:
  """Official netD state dict -> `MultiscaleDiscriminator` (params, batch_stats).

  The number of scales and layers is read from the keys (`discriminator_{s}.model{n}`).
  Every key is used.

  Raises:
    KeyError: an expected tensor is missing.
    ValueError: keys that do not fit the PatchGAN layout.
  """
  r = as_reader(state_dict)
  state_dict = r.state_dict
  scales = sorted({int(m.group(1)) for k in state_dict
                   if (m := re.match(r"^discriminator_(\d+)\.", k))})
  params: Params = {}
  stats: Params = {}
  for s in scales:
    prefix = f"discriminator_{s}."
    blocks = sorted({int(m.group(1)) for k in state_dict
                     if (m := re.match(re.escape(prefix) + r"model(\d+)\.", k))})
    if blocks != list(range(len(blocks))) or len(blocks) < 2:
      raise ValueError(f"unexpected PatchGAN blocks under {prefix!r}: {blocks}")
    sub = r.sub(prefix)
    p: Params = {}
    st: Params = {}
    last = blocks[-1]
    for n in blocks:
      if n in (0, last):
        p[f"model{n}"] = sub.conv(f"model{n}.0")
      else:
        key = f"model{n}.0.0"
        w = sub(key + ".weight_orig")
        out_ch, in_ch, kh, kw = w.shape
        v = sub(key + ".weight_v").reshape(in_ch, kh, kw).transpose(1, 2, 0).reshape(-1)
        p[f"model{n}"] = {"kernel": conv_kernel(w)}
        st[f"model{n}"] = {"u": sub(key + ".weight_u").reshape(out_ch),
                           "v": np.ascontiguousarray(v)}
    params[f"discriminator_{s}"] = p
    stats[f"discriminator_{s}"] = st

  extra = unread_keys(r)
  if extra:
    raise ValueError(f"official D keys not understood: {extra[:8]}")
  return params, stats
