"""The official training losses and gradients, reproduced by the functions the train step calls.

Writes the parity state dicts (`shared/parity/official_weights.py`) as official .pth files (torch,
a dev-only dependency, writes them) unless --official names a folder of such files, converts them
with `convert_official`, runs one full-stage generator-side forward and the D loss of
`pcavs_jax.train_steps` on the fixture's inputs (no optimiser step), maps every gradient back to
the official tensor layout and compares with `official_grads.npz`:

  python scripts/grad_parity_report.py [--official DIR] [--fixture NPZ]

Modes, as the fixture was made: BatchNorm on batch statistics, E_n's dropout off, D's spectral
norm without a power iteration. Exit status 1 when a loss term is off by more than 1e-4
(relative), or a tensor's gradient norm or probe by more than 2e-3 of its gradient norm, or a full
gradient by more than 2e-3 of its max abs. The 11 noise-injection weights are skipped: their
gradients depend on the noise drawn (the official run used its fixed noise buffers), and with
their zero weights the noise changes nothing else.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
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
# A gradient may also differ by this multiple of its float32 rounding floor: the difference
# between our float32 gradients for the batch in the fixture's order and in reverse order.
FLOOR_FACTOR = 4.0
NETS = ("G", "V", "E", "A_sync", "D")
# Official loss key -> ours (pcavs_jax.train_steps).
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


def training_losses_and_grads(variables, d_variables, fixture, config, orders=((0, 1),)) -> list:
  """One full-stage step's losses and gradients (no update) by `pcavs_jax.train_steps`, once per
  batch order in `orders` (one compiled program; a reordered batch gives the same numbers up to
  float rounding, since every loss and statistic is symmetric in the batch)."""
  import jax
  import jax.numpy as jnp
  from pcavs_jax import train_steps
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
  rng = one(jax.random.key_data(jax.random.key(0)))
  results = []
  for order in orders:
    ordered = jax.tree.map(lambda x: x[np.asarray(order)], batch)
    out = run(*state, one(cast(ordered)), rng)
    results.append(jax.tree.map(lambda x: np.asarray(x[0], np.float64), out))
  return results


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


def compare_network(net: str, fixture, ours: dict, reordered: dict, exact: dict | None = None
                    ) -> dict:
  """Per tensor of `net`: ours against the official gradient, in the issue's tolerance and
  against the float32 rounding floor.

  Args:
    ours, reordered: {official key: gradient} from the fixture's batch order and the reversed
      order (their difference is float32 rounding alone).
    exact: the same from a float64 run, or None.

  Returns:
    {'rows': {key: {measure: (relative error, within tolerance, within floor)}},
     'skipped': [keys], 'official_vs_exact' / 'ours_vs_exact': worst relative errors (float64 run)}.
  """
  rows, skipped = {}, []
  worst_exact = {"official_vs_exact": 0.0, "ours_vs_exact": 0.0}
  for key, grad in ours.items():
    if f"grad_{net}/{key}_norm" not in fixture:
      continue
    if SKIPPED.search(key):
      skipped.append(key)
      continue
    official = official_measures(fixture, net, key)
    full = "full" in official
    mine, other = measures(grad, key, full), measures(reordered[key], key, full)
    scale = {"norm": official["norm"], "probe": official["norm"],
             "full": float(np.max(np.abs(official["full"]))) if full else 1.0}
    scale = {k: v if v > 0 else 1.0 for k, v in scale.items()}
    err, noise = distance(mine, official), distance(mine, other)
    rows[key] = {k: (err[k] / scale[k], err[k] <= TENSOR_TOL * scale[k],
                     err[k] <= FLOOR_FACTOR * noise[k]) for k in err}
    if exact is not None:
      truth = measures(exact[key], key, full)
      for name, d in (("official_vs_exact", distance(official, truth)),
                      ("ours_vs_exact", distance(mine, truth))):
        worst_exact[name] = max([worst_exact[name]] + [d[k] / scale[k] for k in d])
  return {"rows": rows, "skipped": skipped, **(worst_exact if exact is not None else {})}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--official", default=None,
                      help="folder of <epoch>_net_{G,V,E,A_sync,D}.pth holding the parity weights "
                           "(default: written from official_weights.py beside the fixture)")
  parser.add_argument("--fixture", default=str(REPO.parent / "shared" / "parity" / "official_grads.npz"))
  parser.add_argument("--float64", action="store_true",
                      help="also compute the gradients in float64 and print how far the official "
                           "float32 gradients and ours are from them (about 10 min and 13 GB here)")
  args = parser.parse_args(argv)
  fixture_path = pathlib.Path(args.fixture)
  if not fixture_path.is_file():
    print(f"--fixture {fixture_path}: no such file", file=sys.stderr)
    return 2
  if args.float64:
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
  out, reordered = training_losses_and_grads(variables, d_variables, fixture, config,
                                             orders=((0, 1), (1, 0)))
  exact = None
  if args.float64:
    config.model.dtype = "float64"
    (exact,) = training_losses_and_grads(variables, d_variables, fixture, config)

  failed = False
  print(f"\n{'loss term (official / ours)':52s} {'official':>10s} {'ours':>10s} {'rel err':>8s}")
  for prefix, terms in (("loss_G", G_TERMS), ("loss_D", D_TERMS)):
    for official_name, ours in terms.items():
      want, got = float(fixture[f"{prefix}/{official_name}"]), float(out["losses"][ours])
      err = abs(got - want) / abs(want)
      failed |= err > LOSS_TOL
      print(f"{prefix + '/' + official_name + ' / ' + ours:52s} {want:10.6g} {got:10.6g} {err:8.1e}")

  print(f"\nGradients per tensor (relative errors; 'beyond both' counts tensors off by more than "
        f"{TENSOR_TOL:g} and by more than {FLOOR_FACTOR:g}x their float32 rounding floor)")
  header = (f"{'network':8s} {'tensors':>7s} {'worst norm':>10s} {'worst probe':>11s} "
            f"{'full (n)':>8s} {'worst full':>10s} {'within tol':>10s} {'beyond both':>11s}")
  print(header + ("  official / ours vs float64" if exact else ""))
  for net in NETS:
    name = "discriminator" if net == "D" else OURS[net]
    grads = {k: layouts[net].to_official(r["grads"][name]) for k, r in
             (("ours", out), ("reordered", reordered)) + ((("exact", exact),) if exact else ())}
    result = compare_network(net, fixture, grads["ours"], grads["reordered"], grads.get("exact"))
    rows = result["rows"]
    worst = lambda m: max((r[m][0] for r in rows.values() if m in r), default=0.0)
    n_full = sum("full" in r for r in rows.values())
    within = sum(all(v[1] for v in r.values()) for r in rows.values())
    beyond = [k for k, r in rows.items() if any(not v[1] and not v[2] for v in r.values())]
    failed |= bool(beyond)
    line = (f"{net:8s} {len(rows):7d} {worst('norm'):10.1e} {worst('probe'):11.1e} {n_full:8d} "
            f"{worst('full'):10.1e} {within:10d} {len(beyond):11d}")
    if exact:
      line += f"  {result['official_vs_exact']:.1e} / {result['ours_vs_exact']:.1e}"
    print(line)
    if beyond:
      print(f"{'':8s} beyond tolerance and rounding: {beyond[:6]}")
    if result["skipped"]:
      print(f"{'':8s} skipped (noise-injection weights): {len(result['skipped'])}")
    no_grad = [k for k in fixture.get(f"meta/no_grad_{net}", []) if layouts[net].parts.get(k)]
    moved = [k for k in no_grad if np.any(grads["ours"][k])]
    if moved:
      failed = True
      print(f"{'':8s} tensors the official leaves without a gradient but ours moves: {moved[:5]}")
  print(f"\n{'FAIL' if failed else 'OK'}: loss terms within {LOSS_TOL:g} (relative); every "
        f"gradient within {TENSOR_TOL:g} or within {FLOOR_FACTOR:g}x its float32 rounding floor")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
