"""The official training losses and gradients, reproduced by the functions the train step calls.

Writes the parity state dicts (`shared/parity/official_weights.py`) as official .pth files (torch,
a dev-only dependency, writes them) unless --official names a folder of such files, converts them
with `convert_official`, runs one full-stage generator-side forward and the D loss of
`pcavs_jax.train.steps` on the fixture's inputs (no optimiser step), maps every gradient back to
the official tensor layout and compares with `official_grads.npz`:

  python scripts/grad_parity_report.py [--official DIR] [--fixture NPZ]

By default the gradients are also computed in float64 (the exact reference; about 13 GB and
several minutes on a 2-core CPU), which measures how far float32 rounding alone moves the official
gradients and ours.

Modes, as the fixture was made: BatchNorm on batch statistics, E_n's dropout off, D's spectral
norm without a power iteration. Exit status 1 when a loss term is off by more than 1e-4
(relative), a tensor the official leaves without a gradient gets one, or a network has tensors
whose gradient norm or probe is off by more than 2e-3 of its gradient norm (a full gradient by
more than 2e-3 of its max abs) while our float32 gradients are further from the float64 ones
than 2e-3 of the network's gradient norm and than float32 rounding moves the official's
(ROUNDING_MARGIN below). The 11 noise-injection weights
are skipped: their gradients depend on the noise drawn (the official run used its fixed noise
buffers), and with their zero weights the noise changes nothing else.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import pathlib
import re
import sys
import tempfile
import zlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs import default  # noqa: E402
from pcavs_jax.convert.map_encoders import (convert_audio_encoder, convert_identity_encoder,  # noqa: E402
                                            convert_nonidentity_encoder)
from pcavs_jax.convert.map_gan import convert_discriminator, convert_generator  # noqa: E402
from pcavs_jax.convert.official import convert_official, find_official_files  # noqa: E402
from pcavs_jax.convert.parity import nhwc  # noqa: E402
from pcavs_jax.convert.torch_pickle import load_state_dict  # noqa: E402

LOSS_TOL, TENSOR_TOL = 1e-4, 2e-3
# float32 rounding alone moves some official gradients (convs before train-mode BatchNorm at
# batch 2, biases whose exact gradient is 0) further than TENSOR_TOL from the exact (float64)
# gradient. Where a network's tensors are not all within TENSOR_TOL, our largest float32 error
# against float64, relative to the network's gradient norm, must stay within TENSOR_TOL or within
# this multiple of the official float32 gradients' own largest error.
ROUNDING_MARGIN = 2.0
NETS = ("G", "V", "E", "A_sync", "D")
# Official loss key -> ours (pcavs_jax.train.steps).
G_TERMS = {"CrossModal": "sync_l1", "SoftmaxContrastive": "sync_contrastive_va",
           "SoftmaxContrastive_v2a": "sync_contrastive_av", "GAN_Feat": "feature_matching_visual",
           "GAN_Feat_audio": "feature_matching_audio", "GANv": "gan_visual", "GANa": "gan_audio",
           "loss_cls": "identity_ce", "total": "g_loss"}
D_TERMS = {"D_Fake": "d_fake", "D_real": "d_real", "total": "d_loss"}
OURS = {"G": "generator", "V": "identity_encoder", "E": "nonidentity_encoder",
        "A_sync": "audio_encoder"}
SKIPPED = re.compile(r"(^|\.)noise\.weight$")


def _params_of(net: str, state_dict, model_config):
  """The Flax params the converter makes of one official network's state dict."""
  if net == "G":
    return convert_generator(state_dict, resolution=model_config.resolution,
                             width=model_config.width)[0]
  if net == "D":
    return convert_discriminator(state_dict)[0]
  fn = {"V": convert_identity_encoder, "E": convert_nonidentity_encoder,
        "A_sync": convert_audio_encoder}[net]
  return fn(state_dict)[0]


@dataclasses.dataclass
class Layout:
  """Where each element of each official tensor went in the converted params.

  parts[key]: [(leaf path, positions in the flat leaf, positions in the flat official tensor)].
  """
  shapes: dict[str, tuple[int, ...]]
  parts: dict[str, list[tuple[tuple, np.ndarray, np.ndarray]]]

  def to_official(self, grads) -> dict[str, np.ndarray]:
    """A gradient tree in our layout -> {official key: float64 array in PyTorch layout}."""
    import jax
    leaves = {path: np.asarray(x, np.float64).ravel()
              for path, x in jax.tree_util.tree_leaves_with_path(grads)}
    out = {}
    for key, parts in self.parts.items():
      flat = np.zeros(int(np.prod(self.shapes[key])), np.float64)
      for path, ours, official in parts:
        np.add.at(flat, official, leaves[path][ours])
      out[key] = flat.reshape(self.shapes[key])
    return out


def official_layout(net: str, state_dict, keys, model_config) -> Layout:
  """Traces the converter's element map by converting two tagged copies of the state dict.

  One copy numbers each tensor's elements 1..n, the other fills each tensor with its key's
  number; the converter only moves elements (transposes, reshapes), so the two converted trees
  say, for every parameter element, which official element it is.
  """
  import jax
  keys = sorted(keys)
  position = dict(state_dict)
  owner = dict(state_dict)
  for i, key in enumerate(keys):
    shape = np.shape(state_dict[key])
    position[key] = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float64).reshape(shape)
    owner[key] = np.full(shape, i + 1, np.float64)
  pos_leaves = jax.tree_util.tree_leaves_with_path(_params_of(net, position, model_config))
  own_leaves = dict(jax.tree_util.tree_leaves_with_path(_params_of(net, owner, model_config)))
  parts: dict[str, list] = {k: [] for k in keys}
  for path, pos in pos_leaves:
    pos, own = np.asarray(pos).ravel(), np.asarray(own_leaves[path]).ravel()
    for i in np.unique(own):
      if i < 1 or i != int(i) or int(i) > len(keys):
        raise ValueError(f"{net}: parameter {jax.tree_util.keystr(path)} holds values that come "
                         f"from no tagged official tensor; the converter is not a pure move")
      at = np.nonzero(own == i)[0]
      parts[keys[int(i) - 1]].append((path, at, pos[at].astype(np.int64) - 1))
  shapes = {k: tuple(np.shape(state_dict[k])) for k in keys}
  for key in keys:
    covered = np.concatenate([p[2] for p in parts[key]]) if parts[key] else np.zeros(0, np.int64)
    n = int(np.prod(shapes[key]))
    if parts[key] and np.bincount(covered, minlength=n).max() > 1 or (
        parts[key] and len(np.unique(covered)) != n):
      raise ValueError(f"{net}.{key}: the converter does not place each element exactly once")
  return Layout(shapes, parts)


def parameter_keys(fixture, net: str, state_dict) -> list[str]:
  """The official parameter tensors of `net`: those with a stored gradient and those listed as
  receiving none."""
  no_grad = set(fixture.get(f"meta/no_grad_{net}", []))
  return [k for k in state_dict if f"grad_{net}/{k}_norm" in fixture or k in no_grad]


def _write_parity_pth(parity_dir: pathlib.Path, out: pathlib.Path) -> None:
  import torch
  spec = importlib.util.spec_from_file_location("official_weights", parity_dir / "official_weights.py")
  weights = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(weights)
  for net in NETS:
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.state_dict(net).items()}
    torch.save(sd, out / f"1_net_{net}.pth")


def training_losses_and_grads(variables, d_variables, fixture, config) -> dict:
  """One full-stage step's losses and gradients (no update) by `pcavs_jax.train.steps`, computed
  in `config.model.dtype`."""
  import jax
  import jax.numpy as jnp
  from pcavs_jax.train import steps as train_steps
  from pcavs_jax.models.pcavs import build_discriminator, build_model

  model = build_model(config.model).clone(bn_axis_name=train_steps.AXIS)
  discriminator = build_discriminator(config.model)
  dtype = jnp.dtype(config.model.dtype)
  cast = lambda tree: jax.tree.map(
      lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree)
  target = nhwc(fixture["in_target"])[:, None]
  batch = {"target": target, "pose_source": target,
           "reference": nhwc(fixture["in_reference"])[:, None],
           "mel": fixture["in_spectrogram"][:, None, 0],
           "label": fixture["in_labels"].astype(np.int32)}

  def step(g_params, g_stats, d_params, d_stats, batch, rng):
    batch = train_steps.flatten_clip(batch)
    outputs, vjp_fn, _ = train_steps.generator_side_forward(
        g_params, g_stats, batch, rng, model=model, stage="full",
        noise_injection=config.train.noise_injection)
    g_loss, g_terms, g_grads = train_steps.generator_side_loss_and_grads(
        outputs, vjp_fn, batch, d_params, d_stats, discriminator=discriminator,
        loss_config=config.loss)
    d_loss, d_terms, d_grads, _ = train_steps.discriminator_loss_and_grads(
        d_params, d_stats, outputs, batch, discriminator=discriminator,
        gan_weight=config.loss.gan, power_iteration=False)
    return {"losses": {**g_terms, "g_loss": g_loss, **d_terms, "d_loss": d_loss},
            "grads": {**g_grads, "discriminator": d_grads}}

  one = lambda tree: jax.tree.map(lambda x: jnp.asarray(x)[None], tree)
  run = jax.pmap(step, axis_name=train_steps.AXIS)
  state = [one(cast(t)) for t in (variables["params"], variables["batch_stats"],
                                  d_variables["params"], d_variables["batch_stats"])]
  out = run(*state, one(cast(batch)), one(jax.random.key_data(jax.random.key(0))))
  return jax.tree.map(lambda x: np.asarray(x[0], np.float64), out)


def _probe(key: str, shape) -> np.ndarray:
  return np.random.default_rng(zlib.crc32(("probe/" + key).encode())).standard_normal(shape)


def official_measures(fixture, net: str, key: str) -> dict:
  """The fixture's norm, probe and (small tensors) full gradient of one official tensor."""
  out = {"norm": float(fixture[f"grad_{net}/{key}_norm"]),
         "probe": float(fixture[f"grad_{net}/{key}_probe"])}
  if f"grad_{net}/{key}_full" in fixture:
    out["full"] = np.asarray(fixture[f"grad_{net}/{key}_full"], np.float64)
  return out


def measures(grad: np.ndarray, key: str, full: bool) -> dict:
  out = {"norm": float(np.linalg.norm(grad)), "probe": float(np.sum(grad * _probe(key, grad.shape)))}
  if full:
    out["full"] = grad
  return out


def distance(a: dict, b: dict) -> dict:
  """Absolute differences of two measure dicts (max abs for full tensors)."""
  return {k: float(np.max(np.abs(a[k] - b[k]))) if k == "full" else abs(a[k] - b[k]) for k in a}


def compare_network(net: str, fixture, ours: dict, exact: dict | None = None) -> dict:
  """Per tensor of `net`: ours against the official gradient, and both against the exact one.

  Args:
    ours: {official key: our float32 gradient in the official layout}.
    exact: the same from a float64 run, or None.

  Returns:
    {'rows': {key: {measure: (error / the tensor's scale, within TENSOR_TOL)}},
     'skipped': [keys]} and, with `exact`, 'official_vs_exact' / 'ours_vs_exact': the worst
    error against the float64 gradient, relative to the tensor's scale and to the network's
    gradient norm ('*_of_network').
  """
  rows, skipped = {}, []
  keys = [k for k in ours if f"grad_{net}/{k}_norm" in fixture]
  network_norm = float(np.sqrt(sum(float(fixture[f"grad_{net}/{k}_norm"]) ** 2 for k in keys)))
  worst = {}
  for key in keys:
    if SKIPPED.search(key):
      skipped.append(key)
      continue
    official = official_measures(fixture, net, key)
    full = "full" in official
    mine = measures(ours[key], key, full)
    scale = {"norm": official["norm"], "probe": official["norm"],
             "full": float(np.max(np.abs(official["full"]))) if full else 1.0}
    scale = {k: v if v > 0 else 1.0 for k, v in scale.items()}
    err = distance(mine, official)
    rows[key] = {k: (err[k] / scale[k], err[k] <= TENSOR_TOL * scale[k]) for k in err}
    if exact is not None:
      truth = measures(exact[key], key, full)
      for name, d in (("official_vs_exact", distance(official, truth)),
                      ("ours_vs_exact", distance(mine, truth))):
        worst[name] = max([worst.get(name, 0.0)] + [d[k] / scale[k] for k in d])
        worst[name + "_of_network"] = max([worst.get(name + "_of_network", 0.0)]
                                          + [d[k] / network_norm for k in d])
  return {"rows": rows, "skipped": skipped, **worst}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--official", default=None,
                      help="folder of <epoch>_net_{G,V,E,A_sync,D}.pth holding the parity weights "
                           "(default: written from official_weights.py beside the fixture)")
  parser.add_argument("--fixture", default=str(REPO.parent / "shared" / "parity" / "official_grads.npz"))
  parser.add_argument("--float32-only", action="store_true",
                      help="skip the float64 reference (the float32 rounding ceiling): the "
                           "gradients are then judged by the tolerance alone")
  args = parser.parse_args(argv)
  fixture_path = pathlib.Path(args.fixture)
  if not fixture_path.is_file():
    print(f"--fixture {fixture_path}: no such file", file=sys.stderr)
    return 2
  if not args.float32_only:
    import jax
    jax.config.update("jax_enable_x64", True)
  fixture = dict(np.load(fixture_path))
  config = default.get_config()
  config.model.hourglass_dropout = 0.0     # the fixture's dropout is off

  with tempfile.TemporaryDirectory() as tmp:
    official = pathlib.Path(args.official) if args.official else pathlib.Path(tmp)
    if not args.official:
      _write_parity_pth(fixture_path.parent, official)
    variables, d_variables, report = convert_official(official, config.model)
    if d_variables is None:
      print(f"--official {official}: no <epoch>_net_D.pth (the D gradients need it)", file=sys.stderr)
      return 2
    files = find_official_files(official)
    layouts = {}
    for net in NETS:
      sd = load_state_dict(files[net])
      layouts[net] = official_layout(net, sd, parameter_keys(fixture, net, sd), config.model)
  print(report.summary())
  out = training_losses_and_grads(variables, d_variables, fixture, config)
  exact = None
  if not args.float32_only:
    config.model.dtype = "float64"
    exact = training_losses_and_grads(variables, d_variables, fixture, config)

  failed = False
  print(f"\n{'loss term (official / ours)':52s} {'official':>10s} {'ours':>10s} {'rel err':>8s}")
  for prefix, terms in (("loss_G", G_TERMS), ("loss_D", D_TERMS)):
    for official_name, ours in terms.items():
      want, got = float(fixture[f"{prefix}/{official_name}"]), float(out["losses"][ours])
      err = abs(got - want) / abs(want)
      failed |= err > LOSS_TOL
      print(f"{prefix + '/' + official_name + ' / ' + ours:52s} {want:10.6g} {got:10.6g} {err:8.1e}")

  print(f"\nGradients per tensor, relative to the official tensor's norm (max abs for full "
        f"tensors); tolerance {TENSOR_TOL:g}")
  header = (f"{'network':8s} {'tensors':>7s} {'within':>6s} {'worst norm':>10s} "
            f"{'worst probe':>11s} {'full (n)':>8s} {'worst full':>10s}")
  if exact:
    header += "   vs float64: official / ours (per tensor; per network norm)"
  print(header)
  for net in NETS:
    name = "discriminator" if net == "D" else OURS[net]
    ours = layouts[net].to_official(out["grads"][name])
    result = compare_network(net, fixture, ours,
                             layouts[net].to_official(exact["grads"][name]) if exact else None)
    rows = result["rows"]
    worst = lambda m: max((r[m][0] for r in rows.values() if m in r), default=0.0)
    n_full = sum("full" in r for r in rows.values())
    within = sum(all(v[1] for v in r.values()) for r in rows.values())
    line = (f"{net:8s} {len(rows):7d} {within:6d} {worst('norm'):10.1e} {worst('probe'):11.1e} "
            f"{n_full:8d} {worst('full'):10.1e}")
    if exact:
      # Our float32 gradients must be about as close to the exact ones as the official's are.
      off, mine = result["official_vs_exact_of_network"], result["ours_vs_exact_of_network"]
      failed |= within < len(rows) and mine > max(ROUNDING_MARGIN * off, TENSOR_TOL)
      line += (f"   {result['official_vs_exact']:.1e} / {result['ours_vs_exact']:.1e}; "
               f"{off:.1e} / {mine:.1e}")
    else:
      failed |= within < len(rows)
    print(line)
    if result["skipped"]:
      print(f"{'':8s} skipped (noise-injection weights): {len(result['skipped'])}")
    no_grad = [k for k in fixture.get(f"meta/no_grad_{net}", []) if layouts[net].parts.get(k)]
    moved = [k for k in no_grad if np.any(ours[k])]
    if moved:
      failed = True
      print(f"{'':8s} tensors the official leaves without a gradient but ours moves: {moved[:5]}")
  print(f"\n{'FAIL' if failed else 'OK'}: loss terms within {LOSS_TOL:g} (relative); gradients "
        + (f"within {TENSOR_TOL:g}, or, per network, our float32 gradients within "
           f"{TENSOR_TOL:g} of the network's gradient norm from the float64 ones, or no further "
           f"than {ROUNDING_MARGIN:g}x the official float32 gradients are"
           if exact else f"within {TENSOR_TOL:g}"))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
