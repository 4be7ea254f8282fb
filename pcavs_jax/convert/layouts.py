"""PyTorch-to-Flax layout rules shared by the per-network key maps."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

StateDict = Mapping[str, np.ndarray]


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """OIHW (Conv2d) -> HWIO; (O, I, K) Conv1d -> (K, I, O)."""
  if w.ndim == 4:
    return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))
  if w.ndim == 3:
    return np.ascontiguousarray(np.transpose(w, (2, 1, 0)))
  raise ValueError(f"conv weight must be 3-D or 4-D, got shape {w.shape}")


def linear_kernel(w: np.ndarray) -> np.ndarray:
  """(out, in) -> (in, out)."""
  if w.ndim != 2:
    raise ValueError(f"linear weight must be 2-D, got shape {w.shape}")
  return np.ascontiguousarray(w.T)


class KeyReader:
  """Reads tensors from a state dict and remembers which keys were used."""

  def __init__(self, state_dict: StateDict, prefix: str = ""):
    self.state_dict = state_dict
    self.prefix = prefix
    self.used: set[str] = set()

  def __call__(self, key: str) -> np.ndarray:
    full = self.prefix + key
    if full not in self.state_dict:
      raise KeyError(f"official checkpoint lacks key {full!r}")
    self.used.add(full)
    return np.asarray(self.state_dict[full])

  def has(self, key: str) -> bool:
    return (self.prefix + key) in self.state_dict

  def sub(self, prefix: str) -> "KeyReader":
    r = KeyReader(self.state_dict, self.prefix + prefix)
    r.used = self.used
    return r

  def conv(self, key: str, bias: bool = True) -> dict:
    """Conv2d/Conv1d `key.weight` (+ `key.bias`) as a flax nn.Conv param dict."""
    out = {"kernel": conv_kernel(self(key + ".weight"))}
    if bias:
      out["bias"] = self(key + ".bias")
    return out

  def linear(self, key: str, bias: bool = True) -> dict:
    out = {"kernel": linear_kernel(self(key + ".weight"))}
    if bias:
      out["bias"] = self(key + ".bias")
    return out

  def batch_norm(self, key: str) -> tuple[dict, dict]:
    """BatchNorm -> (params {scale, bias}, batch_stats {mean, var}); num_batches_tracked is read too."""
    params = {"scale": self(key + ".weight"), "bias": self(key + ".bias")}
    stats = {"mean": self(key + ".running_mean"), "var": self(key + ".running_var")}
    if self.has(key + ".num_batches_tracked"):
      self(key + ".num_batches_tracked")
    return params, stats


def as_reader(sd: StateDict | KeyReader) -> KeyReader:
  """`sd` itself when it is a KeyReader (so its caller sees what was read), else a new one."""
  return sd if isinstance(sd, KeyReader) else KeyReader(sd)


def unread_keys(reader: KeyReader, unused: Iterable[str] = ()) -> list[str]:
  """Keys of the reader's state dict neither read nor declared unused (empty when complete)."""
  unused = set(unused)
  return sorted(k for k in reader.state_dict if k not in reader.used and k not in unused)
