"""The safe .pth reader: both PyTorch file formats, and refusal of pickled code."""
import collections
import pickle
import zipfile

import numpy as np
import pytest

from pcavs_jax.convert.torch_pickle import CheckpointFormatError, UnsafeCheckpointError, load_state_dict

torch = pytest.importorskip("torch", reason="torch (a dev-only dependency) writes the .pth fixtures")


def _state_dict():
  a = torch.randn(3, 4)
  return collections.OrderedDict(
      weight=a, view_of_weight=a[1], transposed=torch.randn(4, 5).t(), index=torch.arange(7),
      scalar=torch.tensor(3), half=torch.randn(6).half(), bf16=torch.randn(5).bfloat16(),
      mask=torch.tensor([True, False]), param=torch.nn.Parameter(torch.randn(2, 2)))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_both_formats_exactly(tmp_path, zip_format):
  sd = _state_dict()
  path = tmp_path / "net.pth"
  torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
  assert zipfile.is_zipfile(path) == zip_format
  out = load_state_dict(path)
  assert set(out) == set(sd)
  for key, value in sd.items():
    expected = value.detach().float().numpy() if value.dtype == torch.bfloat16 else value.detach().numpy()
    assert out[key].shape == expected.shape, key
    np.testing.assert_array_equal(out[key], expected, err_msg=key)


def test_strips_data_parallel_prefix(tmp_path):
  path = tmp_path / "dp.pth"
  torch.save({"module.conv.weight": torch.ones(2), "module.conv.bias": torch.zeros(2)}, path)
  assert sorted(load_state_dict(path)) == ["conv.bias", "conv.weight"]


class _Evil:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    import os
    return (os.system, (self.command,))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_refuses_pickled_os_system_and_runs_nothing(tmp_path, zip_format):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  torch.save({"weight": torch.ones(2), "payload": _Evil(f"touch {marker}")}, path,
             _use_new_zipfile_serialization=zip_format)
  with pytest.raises(UnsafeCheckpointError, match=r"refusing to load the global (os|posix)\.system"):
    load_state_dict(path)
  assert not marker.exists()


def test_refuses_handwritten_os_system_global(tmp_path):
  def payload(marker):
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."

  live = tmp_path / "plain_pickle_ran_it"
  pickle.loads(payload(live))  # the payload is live: a plain unpickler runs the command
  assert live.exists()
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", payload(marker))
  with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
    load_state_dict(path)
  assert not marker.exists()


@pytest.mark.parametrize("global_name", [b"builtins\neval", b"torch.nn.modules.conv\nConv2d",
                                         b"numpy\nload", b"subprocess\ncall"])
def test_refuses_every_global_outside_the_allowed_set(tmp_path, global_name):
  path = tmp_path / "x.pth"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", b"c" + global_name + b"\n.")
  with pytest.raises(UnsafeCheckpointError, match=global_name.split(b"\n")[1].decode()):
    load_state_dict(path)


def test_bad_files_get_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.pth"):
    load_state_dict(tmp_path / "missing.pth")
  junk = tmp_path / "junk.pth"
  junk.write_bytes(b"this is not a checkpoint")
  with pytest.raises(CheckpointFormatError, match="junk.pth"):
    load_state_dict(junk)
  truncated = tmp_path / "truncated.pth"
  torch.save({"w": torch.randn(100)}, truncated, _use_new_zipfile_serialization=False)
  truncated.write_bytes(truncated.read_bytes()[:-50])
  with pytest.raises(CheckpointFormatError, match="truncated.pth"):
    load_state_dict(truncated)
  not_dict = tmp_path / "list.pth"
  torch.save([torch.ones(1)], not_dict)
  with pytest.raises(CheckpointFormatError, match="not a state dict"):
    load_state_dict(not_dict)
