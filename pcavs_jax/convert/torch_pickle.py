"""Reads PyTorch `.pth` state dicts without torch and without running pickled code.

Both on-disk formats are supported:
  * zip (PyTorch >= 1.6): `<root>/data.pkl` plus one raw file per storage under `<root>/data/`;
  * legacy (PyTorch <= 1.5, which wrote the official PC-AVS files): five pickles in a row
    (magic number, protocol, system info, the object, the storage keys), then each storage as
    an int64 element count followed by its raw bytes.

Unpickling is restricted: only ordered dicts, the tensor-rebuild functions and storage types
resolve, each to a stand-in defined here. Any other global (`os.system`, `builtins.eval`...)
raises `UnsafeCheckpointError` before anything it names is looked up, let alone called.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_ITEM_SIZE = {name: (2 if dt == "bfloat16" else np.dtype(dt).itemsize) for name, dt in _STORAGE_DTYPES.items()}


class UnsafeCheckpointError(pickle.UnpicklingError):
  """A checkpoint's pickle names something outside the allowed set."""


class CheckpointFormatError(ValueError):
  """A checkpoint file is not a readable PyTorch state dict."""


class _StorageType:
  """Stand-in for `torch.FloatStorage` and friends: only a dtype name."""

  def __init__(self, name: str):
    self.name = name


class _Storage:
  """Stand-in for a storage: raw bytes read lazily, typed once the dtype is known."""

  def __init__(self, storage_type: _StorageType, raw: bytes, key: str):
    self.storage_type = storage_type
    self.raw = raw
    self.key = key

  def array(self) -> np.ndarray:
    dtype = _STORAGE_DTYPES[self.storage_type.name]
    if dtype == "bfloat16":
      bits = np.frombuffer(self.raw, dtype="<u2").astype(np.uint32) << 16
      return bits.view(np.float32)
    return np.frombuffer(self.raw, dtype=np.dtype(dtype).newbyteorder("<"))


class _TensorRecord:
  """A tensor as the pickle describes it; legacy files store the bytes after the pickle."""

  def __init__(self, storage: _Storage, storage_offset: int, size, stride):
    if not isinstance(storage, _Storage):
      raise CheckpointFormatError("tensor record does not reference a storage")
    self.storage = storage
    self.offset = int(storage_offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)

  def materialize(self) -> np.ndarray:
    flat = self.storage.array()
    size, stride, key = self.size, self.stride, self.storage.key
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or self.offset < 0:
      raise CheckpointFormatError(f"storage {key}: invalid size {size} / stride {stride}")
    if 0 in size:
      return np.zeros(size, flat.dtype)
    last = self.offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= flat.size:
      raise CheckpointFormatError(f"storage {key}: tensor of size {size} reaches element {last}, "
                                  f"but the storage holds {flat.size}")
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=size, strides=tuple(st * flat.itemsize for st in stride),
        writeable=False)
    return np.array(view)  # a contiguous copy that owns its memory


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRecord:
  """Stand-in for `torch._utils._rebuild_tensor(_v2)`."""
  return _TensorRecord(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the allowed globals; storages come from `load_storage(pid)`."""

  def __init__(self, file: BinaryIO, source: str, load_storage):
    super().__init__(file)
    self._source = source
    self._load_storage = load_storage

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f"{self._source}: refusing to load the global {module}.{name}; a state dict only "
          "needs tensors and ordered dicts, so this file may run code when unpickled") from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise CheckpointFormatError(f"{self._source}: unexpected persistent id {pid!r:.80}")
    return self._load_storage(pid)


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise CheckpointFormatError(f"{path}: zip checkpoint has {len(pickles)} data.pkl records")
    root = pickles[0][: -len("data.pkl")]
    cache: dict[str, _Storage] = {}

    def load_storage(pid):
      _, storage_type, key, _location, numel = pid[:5]
      key = str(key)
      if key not in cache:
        record = f"{root}data/{key}"
        if record not in names:
          raise CheckpointFormatError(f"{path}: storage record {record} is missing")
        raw = archive.read(record)
        need = int(numel) * _ITEM_SIZE[storage_type.name]
        if len(raw) < need:
          raise CheckpointFormatError(f"{path}: storage {key} has {len(raw)} bytes, needs {need}")
        cache[key] = _Storage(storage_type, raw[:need], key)
      return cache[key]

    with archive.open(pickles[0]) as f:
      return _RestrictedUnpickler(io.BytesIO(f.read()), path, load_storage).load()


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    def header(what: str):
      # The header pickles hold plain ints and dicts: no global resolves in them either.
      return _RestrictedUnpickler(f, path, _no_storage(path, what)).load()

    if header("magic number") != _LEGACY_MAGIC:
      raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    if header("protocol") != _LEGACY_PROTOCOL:
      raise CheckpointFormatError(f"{path}: unsupported legacy protocol version")
    header("system info")
    pending: dict[str, tuple[_StorageType, int]] = {}
    storages: dict[str, _Storage] = {}

    def load_storage(pid):
      _, storage_type, key, _location, numel = pid[:5]
      key = str(key)
      pending.setdefault(key, (storage_type, int(numel)))
      storages.setdefault(key, _Storage(storage_type, b"", key))
      view = pid[5] if len(pid) > 5 else None
      if view is not None:
        raise CheckpointFormatError(f"{path}: storage views are not supported")
      return storages[key]

    obj = _RestrictedUnpickler(f, path, load_storage).load()
    keys = header("storage keys")
    for key in keys:
      key = str(key)
      (count,) = struct.unpack("<q", f.read(8))
      if key not in pending:
        raise CheckpointFormatError(f"{path}: storage {key} is not referenced by the state dict")
      storage_type, _ = pending[key]
      nbytes = count * _ITEM_SIZE[storage_type.name]
      raw = f.read(nbytes)
      if len(raw) != nbytes:
        raise CheckpointFormatError(f"{path}: file ends inside storage {key}")
      storages[key].raw = raw
    missing = set(pending) - {str(k) for k in keys}
    if missing:
      raise CheckpointFormatError(f"{path}: storages {sorted(missing)[:5]} have no data")
  return obj


def _no_storage(path: str, what: str):
  def load_storage(pid):
    raise CheckpointFormatError(f"{path}: the {what} header references a tensor storage")
  return load_storage


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
  if isinstance(obj, _TensorRecord):
    out[prefix] = obj.materialize()
  elif isinstance(obj, dict):
    for key, value in obj.items():
      _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
  elif isinstance(obj, (int, float)) and prefix:
    out[prefix] = np.asarray(obj)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads a PyTorch `.pth` state dict as {key: numpy array} without importing torch.

  A `module.` prefix (from `nn.DataParallel`) is stripped; nested dicts (e.g. a checkpoint that
  wraps the state dict under 'state_dict') are flattened with dotted keys.

  Raises:
    FileNotFoundError: the file does not exist.
    UnsafeCheckpointError: the pickle names a global outside the allowed set.
    CheckpointFormatError: the file is not a readable PyTorch state dict.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint file not found: {path}")
  try:
    obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  except (UnsafeCheckpointError, CheckpointFormatError):
    raise
  except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, ValueError,
          TypeError, KeyError, IndexError, AttributeError) as e:
    raise CheckpointFormatError(f"{path}: not a readable PyTorch state dict ({e})") from e
  if not isinstance(obj, dict):
    raise CheckpointFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict")
  flat: dict[str, np.ndarray] = {}
  _flatten(obj, "", flat)
  if flat and all(k.startswith("module.") for k in flat):
    flat = {k[len("module."):]: v for k, v in flat.items()}
  return flat
