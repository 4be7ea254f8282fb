"""Evaluation reports as text tables (rich, rendered to a string): `evaluate`'s report
(`format_table`), `evaluate-synthtalk`'s sets and mechanisms (`summary_table`) and learning
curves (`curve_table`)."""
from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from pcavs_jax.evaluate.cross_driven import ROW_KEYS
from pcavs_jax.evaluate.mechanisms import MECHANISM_KEYS

# (report key, column header, format) of the tables.
Column = tuple[str, str, str]
PAIRED_COLUMNS = (("ssim", "SSIM", "{:.3f}"), ("psnr", "PSNR dB", "{:.2f}"),
                  ("cpbd", "CPBD", "{:.3f}"), ("cpbd_truth", "CPBD truth", "{:.3f}"),
                  ("lmd", "LMD px", "{:.2f}"), ("csim", "CSIM", "{:.3f}"),
                  ("pose_err_yaw", "yaw err °", "{:.2f}"),
                  ("pose_err_pitch", "pitch err °", "{:.2f}"),
                  ("pose_err_roll", "roll err °", "{:.2f}"))
SYNTHTALK_COLUMNS = (("ssim", "SSIM", "{:.3f}"), ("psnr", "PSNR dB", "{:.2f}"),
                     ("mouth_err", "mouth err", "{:.3f}"), ("pose_err", "pose err", "{:.3f}"),
                     ("identity_err", "id err", "{:.3f}"), ("sync", "sync", "{:.3f}"),
                     ("abs_lag", "|lag| fr", "{:.2f}"), ("cpbd", "CPBD", "{:.3f}"))
WIDTH = 240


def _cell(value: Any, fmt: str) -> str:
  """A number formatted; 'n/a' for a missing or non-finite one."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    return "n/a"
  return str(value) if isinstance(value, numbers.Integral) else fmt.format(value)


def _plain(keys: Sequence[str]) -> list[Column]:
  """Columns headed by their keys, floats to 3 decimals."""
  return [(k, k, "{:.3f}") for k in keys]


def table(rows: Sequence[tuple[str, Mapping[str, Any]]], columns: Sequence[Column],
          title: str | None = None) -> str:
  """Rows (label, values by key) as a text table: one column per (key, header, format)."""
  import rich.box
  from rich.console import Console
  from rich.table import Table
  t = Table(title=title, title_justify="left", box=rich.box.SIMPLE_HEAD, pad_edge=False)
  t.add_column("", no_wrap=True)
  for _, head, _ in columns:
    t.add_column(head, justify="right", no_wrap=True)
  for label, values in rows:
    t.add_row(label, *(_cell(values.get(k), fmt) for k, _, fmt in columns))
  console = Console(file=io.StringIO(), width=WIDTH, color_system=None, force_terminal=False)
  console.print(t)
  return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines()).strip("\n")


def format_table(report: Mapping[str, Any], max_rows: int = 20) -> str:
  """`evaluate`'s report as text: the mean row, per-video rows, baselines, then notes."""
  columns = SYNTHTALK_COLUMNS if report["mode"] == "synthtalk" else PAIRED_COLUMNS
  per = report.get("per_video", {})
  rows = [("generated (mean)", report["metrics"])]
  rows += [(f"  {name}", m) for name, m in list(per.items())[:max_rows]]
  rows += [(f"baseline {name}", m) for name, m in report.get("baselines", {}).items()]
  lines = [table(rows, columns)]
  if len(per) > max_rows:
    lines.append(f"  ... {len(per) - max_rows} more videos in the JSON report")
  lines += [f"note: {note}" for note in report.get("notes", [])]
  for name, m in list(per.items())[:max_rows]:
    lines += [f"note: {name}: {n}" for n in m.get("notes", [])]
  lines += [f"{name}: {why}" for name, why in report.get("not_supported", {}).items()]
  return "\n".join(lines)


def curve_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """The learning curves (`cross_driven.evaluate_steps`), one table per set."""
  keys = ("ssim", "psnr", "mouth_ratio", "pose_ratio", "identity_err", "lag") + MECHANISM_KEYS
  sets = list(dict.fromkeys(r.get("set", "") for r in rows))
  return "\n".join(table([(str(r["step"]), r) for r in rows if r.get("set", "") == name],
                         _plain(keys), f"{name} set, per step")
                   for name in sets)


def summary_table(report: Mapping[str, Any]) -> str:
  """The model's rows beside the baselines per set, and the mechanisms of every set.

  Accepts `cross_driven.evaluate_all`'s report, or `evaluate_checkpoint`'s (one set)."""
  if "model" in report:
    report = {"set": {"model": report["model"], **report["baselines"]},
              "mechanisms": {"set": report.get("mechanisms", {})}}
  sets = [k for k in report if k not in ("mechanisms", "per_triple", "generated")]
  parts = [table(list(report[name].items()), _plain(ROW_KEYS),
                 f"{name} identities: generation (ratios: error / static-mouth or "
                 f"reference-pose baseline's)")
           for name in sets]
  mechanisms = report.get("mechanisms", {})
  if mechanisms:
    parts.append(table(list(mechanisms.items()), _plain(MECHANISM_KEYS + ("sync_lag0",)),
                       "mechanisms (sync top-1 chance 0.125)"))
  return "\n".join(parts)
