"""Writing result files so that a crash never leaves a half-written one: atomic JSON, JSON lines.

Every writer of the project (records' manifest, preprocessing labels and reports, generation
results, evaluation reports, training histories) goes through these.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from collections.abc import Mapping
from typing import IO, Any

PathLike = str | os.PathLike


def jsonable(x: Any) -> Any:
  """`x` with numpy scalars and arrays as Python numbers and lists, and NaN / inf as None."""
  if isinstance(x, Mapping):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if hasattr(x, "tolist"):       # numpy arrays and scalars, jax arrays
    return jsonable(x.tolist())
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def write_atomic(path: PathLike, text: str | bytes) -> pathlib.Path:
  """Writes `text` to `path` through a temporary file in the same folder, flushed, then renamed."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as fh:
      fh.write(text.encode() if isinstance(text, str) else text)
      fh.flush()
      os.fsync(fh.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path


def write_json(path: PathLike, data: Any, *, indent: int = 1, sort_keys: bool = False
               ) -> pathlib.Path:
  """Writes `data` as JSON (numpy values as numbers, NaN as null), atomically."""
  return write_atomic(path, json.dumps(jsonable(data), indent=indent, sort_keys=sort_keys))


def append_jsonl(target: PathLike | IO[str], record: Mapping[str, Any]) -> None:
  """Appends one JSON object as a line, flushed: a file path, or an open text file."""
  line = json.dumps(jsonable(record), sort_keys=False) + "\n"
  if hasattr(target, "write"):
    target.write(line)
    target.flush()
    return
  with open(target, "a") as fh:
    fh.write(line)


def read_jsonl(path: PathLike) -> list[dict]:
  """The JSON objects of a JSON-lines file; a torn last line (a crash mid-write) is skipped."""
  rows = []
  for line in pathlib.Path(path).read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows
