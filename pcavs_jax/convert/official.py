"""Converts a folder of official PC-AVS `.pth` files into the variables of `PCAVS` and D."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import jax
import numpy as np

from pcavs_jax.convert.map_encoders import (convert_audio_encoder, convert_identity_encoder,
                                            convert_nonidentity_encoder)
from pcavs_jax.convert.map_gan import convert_discriminator, convert_generator
from pcavs_jax.convert.layouts import KeyReader, unread_keys
from pcavs_jax.convert.torch_pickle import load_state_dict

# Official checkpoint file name -> the role it plays here.
NETWORKS = {
    "G": "generator", "V": "identity_encoder", "E": "nonidentity_encoder",
    "A_sync": "audio_encoder", "D": "discriminator", "A": "unused (netA, not used by inference)",
}
REQUIRED = ("G", "V", "E", "A_sync")
_FILE_RE = re.compile(r"^(?P<epoch>.+?)_net_(?P<net>G|V|E|A_sync|A|D)\.pth$")


@dataclasses.dataclass
class ConversionReport:
  """What the converter read and left: per official network."""
  files: dict[str, str] = dataclasses.field(default_factory=dict)
  unused: dict[str, list[str]] = dataclasses.field(default_factory=dict)      # known, deliberately
  unexpected: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # unknown keys
  missing: dict[str, list[str]] = dataclasses.field(default_factory=dict)     # params not filled

  def summary(self) -> str:
    lines = []
    for net, path in self.files.items():
      lines.append(f"{net:7s} {os.path.basename(path)}: {len(self.unused.get(net, []))} unused, "
                   f"{len(self.unexpected.get(net, []))} unexpected, "
                   f"{len(self.missing.get(net, []))} missing keys")
      for kind in ("unexpected", "missing"):
        keys = getattr(self, kind).get(net, [])
        if keys:
          lines.append(f"  {kind}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
    return "\n".join(lines)

  @property
  def ok(self) -> bool:
    return not any(self.unexpected.values()) and not any(self.missing.values())


def find_official_files(directory: str | os.PathLike, epoch: str | None = None) -> dict[str, str]:
  """Maps network name (G, V, E, A_sync, D, A) to `<epoch>_net_<NET>.pth` in `directory`.

  Without `epoch`, picks 'latest' if present, else the largest numeric epoch.

  Raises:
    FileNotFoundError: the folder is missing or lacks one of G, V, E, A_sync.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"official checkpoint folder not found: {directory}")
  by_epoch: dict[str, dict[str, str]] = {}
  for f in directory.iterdir():
    m = _FILE_RE.match(f.name)
    if m:
      by_epoch.setdefault(m["epoch"], {})[m["net"]] = str(f)
  if not by_epoch:
    raise FileNotFoundError(f"{directory}: no '<epoch>_net_<NET>.pth' files")
  if epoch is None:
    numeric = sorted((int(e), e) for e in by_epoch if e.isdigit())
    epoch = "latest" if "latest" in by_epoch else (numeric[-1][1] if numeric else sorted(by_epoch)[-1])
  files = by_epoch.get(epoch, {})
  missing = [n for n in REQUIRED if n not in files]
  if missing:
    raise FileNotFoundError(f"{directory}: epoch {epoch!r} lacks "
                            + ", ".join(f"{epoch}_net_{n}.pth" for n in missing))
  return files


def _leaf_paths(tree) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _check_against(converted, expected, net: str, report: ConversionReport) -> None:
  """Records expected leaves that were not filled; raises on a shape mismatch."""
  got, want = _leaf_paths(converted), _leaf_paths(expected)
  report.missing[net] = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  if extra:
    raise ValueError(f"network {net}: the key map produced leaves the model lacks: {extra[:5]}")
  bad = [f"{k}: {got[k]} vs model {want[k]}" for k in got if got[k] != want[k]]
  if bad:
    raise ValueError(f"network {net}: shapes differ from the model's: {bad[:5]}")


def convert_official(directory: str | os.PathLike, model_config, epoch: str | None = None):
  """Reads the official files and builds Flax variables.

  Args:
    directory: folder of `<epoch>_net_{G,V,E,A_sync}.pth` (+ optional D, A).
    model_config: `config.model` matching the checkpoint (the official one for official files).
    epoch: which epoch's files to read (default: latest).

  Returns:
    (variables, d_variables or None, report); variables = {'params', 'batch_stats'} of PCAVS.
  """
  from pcavs_jax.models.pcavs import abstract_variables, build_discriminator, build_model

  if model_config.get("generator_width", 0.0) not in (0.0, model_config.width):
    raise ValueError(f"model.generator_width={model_config.generator_width}: official weights "
                     f"have one width for every network; leave generator_width at 0")
  files = find_official_files(directory, epoch)
  report = ConversionReport(files=dict(files))
  model = build_model(model_config)
  expected = abstract_variables(model)
  params, stats = {}, {}
  converters = {"V": convert_identity_encoder, "E": convert_nonidentity_encoder,
                "A_sync": convert_audio_encoder}
  for net, fn in converters.items():
    sd = _load(files[net])
    p, s, unused = fn(sd)
    params[NETWORKS[net]], stats[NETWORKS[net]] = p, s
    _record_keys(net, sd, unused, report)
  sd = _load(files["G"])
  params["generator"], unused = convert_generator(sd, resolution=model_config.resolution,
                                                  width=model_config.width)
  _record_keys("G", sd, unused, report)
  stats = {k: v for k, v in stats.items() if v}
  _check_against(params, expected["params"], "G/V/E/A_sync params", report)
  _check_against(stats, expected.get("batch_stats", {}), "G/V/E/A_sync batch_stats", report)
  variables = {"params": params, "batch_stats": stats}

  d_variables = None
  if "D" in files:
    sd = _load(files["D"])
    d_params, d_stats = convert_discriminator(sd)
    d_variables = {"params": d_params, "batch_stats": d_stats}
    disc = build_discriminator(model_config)
    d_expected = jax.eval_shape(
        disc.init, jax.random.key(0),
        np.zeros((1, model_config.resolution, model_config.resolution, 3), np.float32))
    _check_against(d_variables, dict(d_expected), "D", report)
    _record_keys("D", sd, [], report)
  if "A" in files:
    sd = load_state_dict(files["A"])
    report.unused["A"] = sorted(sd)
  return variables, d_variables, report


def _load(path: str) -> KeyReader:
  """The file's state dict behind a reader that remembers which keys the key maps read."""
  return KeyReader(load_state_dict(path))


def _record_keys(net: str, reader: KeyReader, unused, report: ConversionReport) -> None:
  """Unexpected = keys neither read by the key map nor listed as deliberately unused."""
  report.unused[net] = sorted(unused)
  report.unexpected[net] = unread_keys(reader, unused)
