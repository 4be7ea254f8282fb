"""Manifests: many jobs in one file, and how a run splits them across hosts.

Paths are relative to the manifest's folder where they exist there, else to the working directory.
- CSV with a header: `reference,audio[,pose][,mouth_source][,name]` (`output` is read as `name`);
- JSON lines: one object per job with the same keys;
- the official 8-field `demo.csv` rows (space separated, no header): reference folder, number of
  references, pose frames folder (not a folder: the reference's own pose), number of pose frames,
  audio, mouth-source frames folder, number of mouth frames, mel .npy (or `dummy`).
Rows that name no runnable job come back as `RowError`s, recorded as failures when the jobs run.
Across hosts, job i runs on host i mod `jax.process_count()`, each with its own results file.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pathlib
from collections.abc import Sequence

from pcavs_jax.data.media import InputError
from pcavs_jax.infer.jobs import INPUT_ROLES, JobSpec, PathLike, RowError
from pcavs_jax.infer.writers import check_name

RESULTS_FILE = "results.jsonl"
MANIFEST_KEYS = (*INPUT_ROLES, "name")


def _resolve(value: str, base: pathlib.Path) -> str:
  """A manifest path: relative to the manifest's folder where it exists there, else as given."""
  p = pathlib.Path(os.path.expanduser(value))
  if p.is_absolute():
    return str(p)
  return str(base / p) if (base / p).exists() or not p.exists() else str(p)


def _default_name(reference: str, audio: str, pose: str | None) -> str:
  stem = lambda s: pathlib.Path(s.rstrip("/")).stem
  name = f"{stem(reference)}_{stem(audio)}"
  return name + (f"_{stem(pose)}" if pose else "")


def _int_or_none(text: str) -> int | None:
  try:
    v = int(text)
  except ValueError:
    return None
  return v if v > 0 else None


def official_row(fields: Sequence[str], row: int, base: pathlib.Path) -> JobSpec | RowError:
  """A job from an official 8-field demo.csv row (see the module docstring)."""
  if len(fields) != 8:
    return RowError(f"row{row}", row, f"official demo rows have 8 space-separated fields, "
                                      f"got {len(fields)}", "invalid")
  ref, ref_num, pose, pose_num, audio, mouth, mouth_num, mel = fields
  ref, audio = _resolve(ref, base), _resolve(audio, base)
  pose_path = _resolve(pose, base)
  pose_path = pose_path if os.path.isdir(pose_path) else None  # official: else the reference
  mouth_path = _resolve(mouth, base)
  mel_path = _resolve(mel, base)
  stem = lambda s: pathlib.Path(s.rstrip("/")).name
  name = (f"id_{stem(ref)}_pose_{stem(pose_path or ref)}_audio_"
          f"{pathlib.Path(audio).stem}")
  return JobSpec(name=name, reference=ref, audio=audio, pose=pose_path,
                 mouth_source=mouth_path if os.path.isdir(mouth_path) else None,
                 num_references=_int_or_none(ref_num), num_pose_frames=_int_or_none(pose_num),
                 num_mouth_frames=_int_or_none(mouth_num),
                 mel=mel_path if os.path.isfile(mel_path) else None, row=row)


def _spec_from_mapping(entry: dict, row: int, base: pathlib.Path) -> JobSpec | RowError:
  entry = {str(k).strip().lower(): (str(v).strip() if v is not None else "")
           for k, v in entry.items()}
  if "output" in entry and not entry.get("name"):
    entry["name"] = entry["output"]
  missing = [k for k in ("reference", "audio") if not entry.get(k)]
  fallback = entry.get("name") or f"row{row}"
  if missing:
    return RowError(fallback, row, f"missing {' and '.join(missing)} (columns: "
                                   f"{', '.join(MANIFEST_KEYS)})", "invalid")
  ref, audio = _resolve(entry["reference"], base), _resolve(entry["audio"], base)
  pose = _resolve(entry["pose"], base) if entry.get("pose") else None
  mouth = _resolve(entry["mouth_source"], base) if entry.get("mouth_source") else None
  try:
    name = check_name(entry.get("name") or _default_name(ref, audio, pose))
  except InputError as e:
    return RowError(fallback, row, f"bad output name: {e.problem}", "invalid")
  return JobSpec(name=name, reference=ref, audio=audio, pose=pose, mouth_source=mouth, row=row)


def read_manifest(path: PathLike) -> list[JobSpec | RowError]:
  """Jobs of a manifest: CSV with a header, JSON lines, or official 8-field demo.csv rows.

  Rows that cannot become a job (missing columns, bad JSON, a wrong field count) come back as
  `RowError`s, to be recorded as failures; their paths are checked only when the job runs.

  Raises:
    InputError: the manifest itself is missing, empty or a CSV without reference/audio columns.
  """
  p = pathlib.Path(path)
  if not p.is_file():
    raise InputError(p, "manifest not found", "missing")
  base = p.parent.absolute()
  text = p.read_text(encoding="utf-8-sig")
  lines = [(i + 1, l) for i, l in enumerate(text.splitlines())
           if l.strip() and not l.lstrip().startswith("#")]
  if not lines:
    raise InputError(p, "manifest has no rows", "invalid")
  jobs: list[JobSpec | RowError] = []
  if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
    for row, line in lines:
      try:
        entry = json.loads(line)
        if not isinstance(entry, dict):
          raise ValueError("not a JSON object")
      except ValueError as e:
        jobs.append(RowError(f"row{row}", row, f"not a JSON object ({e})", "invalid"))
        continue
      jobs.append(_spec_from_mapping(entry, row, base))
    return jobs
  first = lines[0][1]
  if "," not in first and len(first.split()) == 8:  # the official format has no header
    return [official_row(line.split(), row, base) for row, line in lines]
  reader = csv.reader(io.StringIO("\n".join(l for _, l in lines)))
  header = [h.strip().lower() for h in next(reader)]
  header = ["name" if h == "output" else h for h in header]
  if "reference" not in header or "audio" not in header:
    raise InputError(p, f"CSV manifest header must name 'reference' and 'audio' columns (and "
                        f"optionally pose, mouth_source, name); got {header}", "invalid")
  for (row, _), values in zip(lines[1:], reader):
    if len(values) > len(header):
      jobs.append(RowError(f"row{row}", row, f"{len(values)} fields for {len(header)} columns",
                           "invalid"))
      continue
    jobs.append(_spec_from_mapping(dict(zip(header, values)), row, base))
  return jobs


def shard_jobs(jobs: Sequence, process_index: int, process_count: int) -> list:
  """The jobs of one host: every process_count-th from process_index."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} out of range for {process_count} hosts")
  return list(jobs[process_index::process_count])


def results_path(out_dir: PathLike, process_index: int = 0, process_count: int = 1
                 ) -> pathlib.Path:
  """The results file of one host."""
  name = RESULTS_FILE if process_count == 1 else (
      f"results-{process_index:03d}-of-{process_count:03d}.jsonl")
  return pathlib.Path(out_dir) / name
