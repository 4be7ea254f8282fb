"""Prints the SynthTalk analyzer's error (% of each quantity's range, mean / 95th percentile).

  python scripts/analyzer_accuracy.py [--cases 200] [--resolution 64]
"""
from __future__ import annotations

import argparse

import numpy as np

from data_pipeline.synthtalk.accuracy import CONDITIONS, KEYS, analyzer_errors


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", type=int, default=200)
  p.add_argument("--resolution", type=int, default=64)
  a = p.parse_args()
  print(f"{a.resolution} px, {a.cases} cases per condition; % of range, mean/p95")
  print(f"{'':15s}" + "".join(f"{k:>13s}" for k in KEYS) + f"{'failures':>10s}")
  for kind in CONDITIONS:
    e = analyzer_errors(kind, a.cases, a.resolution)
    cells = "".join(f"{100 * np.nanmean(v):6.1f}/{100 * np.nanpercentile(v, 95):<6.1f}" for v in e.values())
    print(f"{kind:15s}{cells}{int(np.isnan(e['yaw']).sum()):10d}")


if __name__ == "__main__":
  main()
