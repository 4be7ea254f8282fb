"""`pcavs-jax convert --official DIR --out CKPT`: official .pth files to an exported checkpoint."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
  p = subparsers.add_parser("convert", help="convert official PC-AVS .pth files to a Flax checkpoint",
                            description=__doc__)
  p.add_argument("--official", required=True, help="folder of <epoch>_net_{G,V,E,A_sync}[,D,A].pth")
  p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
  p.add_argument("--epoch", default=None, help="which epoch's files (default: latest)")
  p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
  from pcavs_jax.models.config import model_config
  from pcavs_jax.checkpoint import check_export_target, save_export
  from pcavs_jax.convert.official import convert_official

  check_export_target(args.out)  # before the slow conversion, not after it
  config = model_config()
  variables, d_variables, report = convert_official(args.official, config, epoch=args.epoch)
  print(report.summary())
  if not report.ok:
    print("conversion incomplete: unexpected or missing keys above; nothing written")
    return 1
  out = save_export(args.out, variables, config, d_variables, source=str(args.official))
  print(f"wrote {out}")
  return 0
