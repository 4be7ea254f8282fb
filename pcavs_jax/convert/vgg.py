"""ImageNet VGG19 weights (for the perceptual loss) from a user-given file, without torch.

Either an `.npz` of torchvision-named arrays (`features.0.weight`, `features.0.bias`, ...) or a
torchvision `vgg19-*.pth`. Only the 13 convolutions up to relu5_1 are read; the rest of the file
(conv5_2.., classifier) is ignored. An `.npz` can be written from a torchvision install with
  np.savez('vgg19.npz', **{k: v.numpy() for k, v in torchvision.models.vgg19(weights='DEFAULT')
                           .state_dict().items() if k.startswith('features.')})
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from pcavs_jax.convert import torch_pickle
from pcavs_jax.models.vgg import VGG19_CONVS, Params


class VGGWeightsError(ValueError):
  """A VGG19 weights file is unreadable or does not hold torchvision VGG19 `features`."""


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
  is_npz = False
  if zipfile.is_zipfile(path):
    # An .npz is a zip of .npy members; a torch zip checkpoint holds data.pkl and raw storages.
    with zipfile.ZipFile(path) as zf:
      is_npz = all(n.endswith(".npy") for n in zf.namelist())
  if is_npz:
    try:
      with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k]) for k in data.files}
    except (ValueError, OSError) as e:
      raise VGGWeightsError(f"{path}: unreadable .npz ({e})") from e
  try:
    return torch_pickle.load_state_dict(path)
  except (ValueError, OSError) as e:  # CheckpointFormatError; UnsafeCheckpointError propagates
    raise VGGWeightsError(f"{path}: neither an .npz of arrays nor a readable PyTorch state dict "
                          f"({e})") from e


def _find(state: dict[str, np.ndarray], key: str) -> np.ndarray | None:
  """state[key], also accepting one unique wrapping prefix (e.g. 'vgg.features.0.weight')."""
  if key in state:
    return state[key]
  hits = [k for k in state if k.endswith("." + key)]
  return state[hits[0]] if len(hits) == 1 else None


def load_vgg19_weights(path: str | os.PathLike) -> Params:
  """Reads ImageNet VGG19 weights from a user-given file as `VGG19` params.

  Args:
    path: an `.npz` of torchvision-named arrays (`features.{i}.weight` (out, in, 3, 3),
      `features.{i}.bias`) or a torchvision `vgg19-*.pth`.

  Returns:
    {conv name: {'kernel': HWIO, 'bias'}} float32, to use as `{'params': ...}` of `VGG19`.

  Raises:
    FileNotFoundError: no file at `path`.
    VGGWeightsError: the file is unreadable, or keys are missing or shapes differ from VGG19's.
    UnsafeCheckpointError: a `.pth` whose pickle names code outside the reader's allowed set.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"VGG19 weights file not found: {path}")
  state = _read_state_dict(path)
  params, problems = {}, []
  for name, index, c_in, c_out in VGG19_CONVS:
    w = _find(state, f"features.{index}.weight")
    b = _find(state, f"features.{index}.bias")
    if w is None or b is None:
      problems.append(f"missing features.{index}.weight/bias ({name})")
      continue
    if w.shape != (c_out, c_in, 3, 3) or b.shape != (c_out,):
      problems.append(f"features.{index} ({name}): weight {w.shape}, bias {b.shape}; "
                      f"expected ({c_out}, {c_in}, 3, 3), ({c_out},)")
      continue
    kernel = np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))   # OIHW -> HWIO
    params[name] = {"kernel": kernel.astype(np.float32), "bias": b.astype(np.float32)}
  if problems:
    sample = ", ".join(sorted(state)[:6]) or "no arrays"
    raise VGGWeightsError(
        f"{path} does not hold torchvision VGG19 weights: " + "; ".join(problems[:4])
        + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
        + f". The file has: {sample}{', ...' if len(state) > 6 else ''}")
  return params
