"""Talking-face generation: a reference photo, a speech track and a pose source to an mp4.

The flow, one module each:
  jobs.py       `JobSpec` (what a user asks for), `PreparedJob` (what the network reads),
                `PrepareOptions`, the record of a failed job;
  prepare.py    reading, checking and aligning references, audio (mel windows) and pose sources
                as training data is; the official crop;
  manifests.py  jobs files (CSV, JSON lines, the official demo.csv), sharding across hosts;
  datasets.py   jobs from the SynthTalk cross-driven set and from clip records;
  runner.py     `FrameDriver`: the network on fixed-size batches, sharded over local devices;
  batch.py      `BatchRunner`: frames of many jobs packed into shared device batches, inputs
                prepared ahead, failures recorded while the other jobs go on;
  writers.py    output paths, the atomic per-job writer (video, panel, frames), the results file;
  api.py        `generate`, `generate_batch`, `generate_synthtalk`, `generate_records`.

The public names below import lazily: `import pcavs_jax.infer.manifests` does not load jax.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "generate": "api", "generate_batch": "api", "generate_synthtalk": "api",
    "generate_records": "api",
    "BatchRunner": "batch", "run_jobs": "batch",
    "JobSpec": "jobs", "PreparedJob": "jobs", "PrepareOptions": "jobs", "RowError": "jobs",
    "prepare_job": "prepare",
    "read_manifest": "manifests", "shard_jobs": "manifests", "results_path": "manifests",
    "eval_set_jobs": "datasets", "record_jobs": "datasets",
    "FrameDriver": "runner", "load_driver": "runner", "random_variables": "runner",
    "panel_frame": "writers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
