"""Key maps from the official encoder checkpoints (`netV`, `netE`, `netA_sync`) to Flax variables.

Each `convert_*` takes the official state dict {torch key: array} and returns
(params, batch_stats, unused_keys): the variables of `IdentityEncoder`,
`NonIdentityEncoder` or `AudioEncoder` (official sizes, width 1.0), and the official keys
that deliberately have no counterpart. Every other key is read. Pass a `KeyReader`
instead of the dict to see afterwards which keys were read (`reader.used`);
`layouts.unread_keys` lists the keys that are neither read nor declared unused.
"""
from __future__ import annotations

from pcavs_jax.convert.layouts import KeyReader, StateDict, as_reader

Tree = dict
Variables = tuple[Tree, Tree]

_STAGE_BLOCKS = (3, 4, 6, 3)
_HOURGLASS_DEPTH = 4

# torchvision's ImageNet head inside netV: the identity encoder uses its own `fc` instead.
IDENTITY_UNUSED = ("model.fc.weight", "model.fc.bias")


def _merge(out: Variables, name: str, sub: Variables) -> None:
  params, stats = sub
  if params:
    out[0][name] = params
  if stats:
    out[1][name] = stats


# ----------------------------------------------------------------------------- E_i


def _residual_block(r: KeyReader, num_convs: int, downsample: bool) -> Variables:
  """conv{i} + bn{i} (no conv bias), and the 1x1 conv + BN shortcut when the shape changes."""
  out: Variables = ({}, {})
  for i in range(1, num_convs + 1):
    out[0][f"conv{i}"] = r.conv(f"conv{i}", bias=False)
    _merge(out, f"bn{i}", r.batch_norm(f"bn{i}"))
  if downsample:
    out[0]["downsample_conv"] = r.conv("downsample.0", bias=False)
    _merge(out, "downsample_bn", r.batch_norm("downsample.1"))
  return out


def _bottleneck(r: KeyReader, downsample: bool) -> Variables:
  return _residual_block(r, 3, downsample)


def convert_identity_encoder(sd: StateDict | KeyReader) -> tuple[Tree, Tree, list[str]]:
  """Official `netV` (ResNeXt50) -> `IdentityEncoder` (params, batch_stats, unused)."""
  r = as_reader(sd)
  m = r.sub("model.")
  out: Variables = ({}, {})
  out[0]["conv1"] = m.conv("conv1", bias=False)
  _merge(out, "bn1", m.batch_norm("bn1"))
  for stage, blocks in enumerate(_STAGE_BLOCKS, 1):
    for j in range(blocks):
      _merge(out, f"layer{stage}_{j}", _bottleneck(m.sub(f"layer{stage}.{j}."), downsample=j == 0))
  out[0]["conv1x1"] = r.conv("conv1x1")
  out[0]["fc"] = r.linear("fc")
  unused = [k for k in IDENTITY_UNUSED if r.has(k)]
  return out[0], out[1], unused


# ----------------------------------------------------------------------------- E_n


def _conv_block(r: KeyReader) -> Variables:
  out: Variables = ({}, {})
  for i in (1, 2, 3):
    _merge(out, f"bn{i}", r.batch_norm(f"bn{i}"))
    out[0][f"conv{i}"] = r.conv(f"conv{i}", bias=False)
  if r.has("downsample.0.weight"):
    _merge(out, "downsample_bn", r.batch_norm("downsample.0"))
    out[0]["downsample_conv"] = r.conv("downsample.2", bias=False)
  return out


def _hourglass(r: KeyReader, depth: int) -> Variables:
  out: Variables = ({}, {})
  for level in range(depth, 0, -1):
    for branch in ("b1", "b2", "b3"):
      _merge(out, f"{branch}_{level}", _conv_block(r.sub(f"{branch}_{level}.")))
  _merge(out, "b2_plus_1", _conv_block(r.sub("b2_plus_1.")))
  return out


def _fan(r: KeyReader) -> Variables:
  out: Variables = ({}, {})
  out[0]["conv1"] = r.conv("conv1")
  _merge(out, "bn1", r.batch_norm("bn1"))
  for name in ("conv2", "conv3", "conv4"):
    _merge(out, name, _conv_block(r.sub(name + ".")))
  _merge(out, "hourglass", _hourglass(r.sub("m0."), _HOURGLASS_DEPTH))
  _merge(out, "top_block", _conv_block(r.sub("top_m_0.")))
  out[0]["conv_last"] = r.conv("conv_last0")
  _merge(out, "bn_end", r.batch_norm("bn_end0"))
  out[0]["heatmaps"] = r.conv("l0")
  _merge(out, "heatmap_bn", r.batch_norm("bn5"))
  out[0]["conv_out"] = r.conv("conv6")
  out[0]["fc"] = r.linear("fc")
  return out


def _mlp(r: KeyReader, key: str) -> Tree:
  """nn.Sequential(Linear, ReLU, Linear) -> MLP {fc1, fc2}."""
  return {"fc1": r.linear(f"{key}.0"), "fc2": r.linear(f"{key}.2")}


def _relu_dense(r: KeyReader, key: str) -> Tree:
  """nn.Sequential(ReLU, Linear) -> ReluDense {fc}."""
  return {"fc": r.linear(f"{key}.1")}


def convert_nonidentity_encoder(sd: StateDict | KeyReader) -> tuple[Tree, Tree, list[str]]:
  """Official `netE` (FanEncoder) -> `NonIdentityEncoder` (params, batch_stats, unused)."""
  r = as_reader(sd)
  out: Variables = ({}, {})
  _merge(out, "fan", _fan(r.sub("model.")))
  for name in ("classifier", "to_mouth", "to_headpose"):
    out[0][name] = _mlp(r, name)
  for name in ("mouth_embed", "mouth_fc", "headpose_embed", "headpose_fc"):
    out[0][name] = _relu_dense(r, name)
  return out[0], out[1], []


# ----------------------------------------------------------------------------- E_a


def _se_block(r: KeyReader, downsample: bool) -> Variables:
  out = _residual_block(r, 2, downsample)
  out[0]["se"] = {"fc1": r.linear("se.fc.0"), "fc2": r.linear("se.fc.2")}
  return out


def convert_audio_encoder(sd: StateDict | KeyReader) -> tuple[Tree, Tree, list[str]]:
  """Official `netA_sync` (ResSESyncEncoder) -> `AudioEncoder` (params, batch_stats, unused)."""
  r = as_reader(sd)
  m = r.sub("model.")
  trunk: Variables = ({}, {})
  trunk[0]["conv1"] = m.conv("conv1")
  _merge(trunk, "bn1", m.batch_norm("bn1"))
  for stage, blocks in enumerate(_STAGE_BLOCKS, 1):
    for j in range(blocks):
      # layer1 keeps 32 channels at stride 1: no shortcut projection.
      _merge(trunk, f"layer{stage}_{j}", _se_block(m.sub(f"layer{stage}.{j}."),
                                                   downsample=(j == 0 and stage > 1)))
  trunk[0]["attention_conv1"] = m.conv("attention.0")
  _merge(trunk, "attention_bn", m.batch_norm("attention.2"))
  trunk[0]["attention_conv2"] = m.conv("attention.3")
  trunk[0]["fc"] = m.linear("fc")
  out: Variables = ({}, {})
  _merge(out, "se_resnet", trunk)
  out[0]["classifier"] = r.linear("fc")
  return out[0], out[1], []

