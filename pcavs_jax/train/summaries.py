"""What a training run logs: the step's scalars averaged over each log interval (a clu
`metrics.Collection`), written to clu's metric writer (TensorBoard), <workdir>/train_history.jsonl
and <workdir>/mechanisms.jsonl (the training probe's measures), and image grids."""
from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable, Mapping

import jax
import numpy as np
from clu import metric_writers, metrics

from pcavs_jax.data.files import append_jsonl

HISTORY_FILE = "train_history.jsonl"
PROBE_FILE = "mechanisms.jsonl"


@functools.lru_cache(maxsize=16)
def _collection(names: tuple[str, ...]):
  """A clu Collection of one `metrics.Average` per scalar, and its jitted merge of one step."""
  collection = metrics.Collection.create(**{n: metrics.Average.from_output(n) for n in names})
  merge = jax.jit(lambda acc, step: acc.merge(collection.single_from_model_output(**step)))
  return collection, merge


class IntervalMetrics:
  """The pmapped train step's scalars, averaged over the steps since the last `compute`.

  Each step's values (one per local device, equal after the step's pmean) merge on the device
  without waiting for the step; `compute` brings the averages to the host. The scalars are the
  stage's: a stage switch starts a new interval.
  """

  def __init__(self):
    self._names: tuple[str, ...] = ()
    self._acc = None
    self.first_step: int | None = None   # the interval's first step

  def add(self, step: int, step_metrics: Mapping[str, jax.Array]) -> None:
    """Adds the metrics of train step `step` (1-based); `all_finite` is left out (a non-finite
    value makes its average non-finite)."""
    step_metrics = {k: v for k, v in step_metrics.items() if k != "all_finite"}
    names = tuple(sorted(step_metrics))
    collection, merge = _collection(names)
    if self._acc is None or names != self._names:
      self._names, self._acc, self.first_step = names, collection.empty(), step
    self._acc = merge(self._acc, step_metrics)

  def compute(self, reset: bool = True) -> dict[str, float]:
    """The interval's averages (waits for its steps); `reset` starts a new interval."""
    if self._acc is None:
      return {}
    values = {k: float(v) for k, v in jax.device_get(self._acc.compute()).items()}
    if reset:
      self._acc, self.first_step = None, None
    return values


class RunLog:
  """Where a run's numbers go: the metric writer (TensorBoard summaries on the main process,
  the log elsewhere), the JSON-lines files in the workdir (main process) and `on_log`."""

  def __init__(self, workdir: str, is_main: bool,
               on_log: Callable[[int, dict[str, float]], None] | None = None):
    self.workdir = pathlib.Path(workdir)
    self.is_main = is_main
    self.on_log = on_log
    self.writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)

  def train_scalars(self, step: int, scalars: dict[str, float]) -> None:
    """The losses and rates of the interval ending at `step`; one train_history.jsonl row."""
    self.writer.write_scalars(step, scalars)
    if self.is_main:  # the curves as JSON lines, readable while the run goes on
      append_jsonl(self.workdir / HISTORY_FILE, {"step": step, **scalars})
    if self.on_log is not None:
      self.on_log(step, scalars)

  def probe_measures(self, step: int, measures: dict[str, float]) -> None:
    """The training probe's measures: TensorBoard `eval/...` and a mechanisms.jsonl row."""
    self.writer.write_scalars(step, {f"eval/{k}": v for k, v in measures.items()})
    if self.is_main:
      append_jsonl(self.workdir / PROBE_FILE, {"step": step, **measures})
    if self.on_log is not None:
      self.on_log(step, measures)

  def samples(self, step: int, samples: dict[str, np.ndarray]) -> None:
    self.writer.write_images(step, {"reference|pose|generated|target": image_grid(samples)[None]})

  def flush(self) -> None:
    self.writer.flush()


def image_grid(samples: dict[str, np.ndarray], max_rows: int = 4) -> np.ndarray:
  """Rows of reference | pose source | generated | target, as one uint8 image."""
  cols = [samples[k][:max_rows] for k in ("reference", "pose_source", "fake_audio", "target")]
  rows = np.concatenate(cols, axis=2)             # side by side
  grid = np.concatenate(list(rows), axis=0)       # stacked
  return np.clip((grid + 1) * 127.5, 0, 255).astype(np.uint8)
