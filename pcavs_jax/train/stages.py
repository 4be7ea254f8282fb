"""The training stages of PC-AVS and a run's schedule of them (`config.train.schedule`).

Stages (what each trains: `optimizers.STAGE_TRAINABLE`):
  'identity': E_i only (identity classification pretraining).
  'sync': E_a and E_n's mouth mapper (audio-visual sync, E_n's trunk frozen).
  'sync_trunk' (not in the paper): as 'sync', with E_n's trunk training too.
  'full': every G-side network (E_i, E_n, E_a, G) and D.
A schedule such as 'identity:1000,sync:500,full' runs the stages in sequence; each starts with
fresh optimiser states and carries every parameter and statistic over.
"""
from __future__ import annotations

from collections.abc import Sequence

import ml_collections

GNetworks = ("identity_encoder", "nonidentity_encoder", "audio_encoder", "generator")
STAGES = ("identity", "sync", "sync_trunk", "full")


def stage_schedule(config: ml_collections.ConfigDict) -> list[tuple[str, int]]:
  """The run's stages as [(stage, first step)], from `config.train.schedule`.

  'identity:1000,sync:500,full' -> [('identity', 0), ('sync', 1000), ('full', 1500)]. Each stage
  starts with fresh optimiser states and carries every parameter and statistic over.

  Raises:
    ValueError: an unknown stage, a non-positive step count, or a count on the last stage.
  """
  t = train_fields(config)
  text = t.get("schedule", "") or ""
  if not text.strip():
    return [(t.stage, 0)]
  out, start = [], 0
  items = [x.strip() for x in text.split(",")]
  for i, item in enumerate(items):
    name, _, count = item.partition(":")
    if name not in STAGES:
      raise ValueError(f"config.train.schedule {text!r}: unknown stage {name!r} (known: {STAGES})")
    last = i == len(items) - 1
    if last and count:
      raise ValueError(f"config.train.schedule {text!r}: the last stage runs to the end; "
                       f"drop its step count ({item!r})")
    if not last and (not count.isdigit() or int(count) <= 0):
      raise ValueError(f"config.train.schedule {text!r}: {item!r} needs a positive step count "
                       f"('stage:steps')")
    out.append((name, start))
    start += int(count or 0)
  return out


def _stage_entry(schedule: Sequence[tuple[str, int]], step: int) -> tuple[str, int]:
  current = schedule[0]
  for entry in schedule:
    if step >= entry[1]:
      current = entry
  return current


def stage_at(schedule: Sequence[tuple[str, int]], step: int) -> str:
  """The stage that step `step` (0-based: the step taken from state.step == step) belongs to."""
  return _stage_entry(schedule, step)[0]


def stage_first_step(schedule: Sequence[tuple[str, int]], step: int) -> int:
  """The first step of the stage that runs at `step`."""
  return _stage_entry(schedule, step)[1]


def train_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Accepts the whole config (reads `config.train`) or the train ConfigDict itself."""
  return config.train if "train" in config else config
