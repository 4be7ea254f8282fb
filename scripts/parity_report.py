"""Prints the max abs error of every official parity output, through the public converter.

Writes the parity state dicts (`shared/parity/official_weights.py`) as official-style .pth files
(torch, a dev-only dependency, writes them), converts them with `convert_official`, loads them with
`load_checkpoint` and compares with `official_outputs.npz`.

  python scripts/parity_report.py [--parity-dir ../shared/parity] [--format legacy|zip]
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import tempfile

import numpy as np

from pcavs_jax.models.config import model_config
from pcavs_jax.checkpoint import load_checkpoint
from pcavs_jax.convert.official import convert_official
from pcavs_jax.convert.parity import official_parity_errors
from pcavs_jax.models.pcavs import build_discriminator

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--parity-dir", default=str(REPO.parent / "shared" / "parity"))
  parser.add_argument("--format", default="legacy", choices=["legacy", "zip"])
  args = parser.parse_args()
  import torch

  parity = pathlib.Path(args.parity_dir)
  spec = importlib.util.spec_from_file_location("official_weights", parity / "official_weights.py")
  weights = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(weights)
  with tempfile.TemporaryDirectory() as tmp:
    for net in ("G", "V", "E", "A_sync", "D"):
      sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.state_dict(net).items()}
      torch.save(sd, f"{tmp}/1_net_{net}.pth", _use_new_zipfile_serialization=args.format == "zip")
    model, variables = load_checkpoint(tmp)
    _, d_variables, report = convert_official(tmp, model_config())
    print(report.summary())
    errors = official_parity_errors(model, variables, dict(np.load(parity / "official_outputs.npz")),
                                    build_discriminator(model_config()), d_variables)
  print(f"\n{'official output':34s} max abs error ({args.format} .pth)")
  for key, err in errors.items():
    print(f"{key:34s} {err:.2e}")
  print(f"{'worst':34s} {max(errors.values()):.2e}  (tolerance 1e-4)")


if __name__ == "__main__":
  main()
