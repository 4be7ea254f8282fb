"""End-to-end parity: official-layout .pth files -> public converter -> load_checkpoint -> numbers.

The state dicts come from ../shared/parity/official_weights.py, written as .pth files in both
PyTorch formats (zip, and the legacy format of PyTorch <= 1.5 that wrote the official files).
"""
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (a dev-only dependency) writes the .pth fixtures")

from pcavs_jax.models.config import model_config  # noqa: E402
from pcavs_jax import checkpoint
from pcavs_jax.cli import main as cli  # noqa: E402
from pcavs_jax.convert.official import convert_official  # noqa: E402
from pcavs_jax.convert.parity import nhwc, official_parity_errors  # noqa: E402
from pcavs_jax.models.pcavs import build_discriminator  # noqa: E402

TOL = 1e-4
NETS = ("G", "V", "E", "A_sync", "D")


@pytest.fixture(scope="module")
def official_dirs(tmp_path_factory, official_weights):
  """{'zip': dir, 'legacy': dir}, each with 1_net_{G,V,E,A_sync,D}.pth."""
  dirs = {fmt: tmp_path_factory.mktemp(f"official_{fmt}") for fmt in ("zip", "legacy")}
  for net in NETS:
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in official_weights.state_dict(net).items()}
    for fmt, d in dirs.items():
      torch.save(sd, d / f"1_net_{net}.pth", _use_new_zipfile_serialization=(fmt == "zip"))
    del sd
  return dirs


@pytest.fixture(scope="module")
def converted(official_dirs):
  return convert_official(official_dirs["zip"], model_config())


@pytest.fixture(scope="module")
def loaded(official_dirs):
  return checkpoint.load_checkpoint(official_dirs["legacy"])


def test_conversion_reads_every_key(converted):
  _, d_variables, report = converted
  assert report.ok, report.summary()
  assert d_variables is not None
  # The documented leftovers: G's unused style MLP, constant input and noise buffers, and
  # E_i's ImageNet head. Nothing else may be left.
  assert all(k.startswith(("style.", "input.", "noises.")) or k.endswith(".kernel")
             for k in report.unused["G"]), report.unused["G"]
  assert report.unused["V"] == ["model.fc.bias", "model.fc.weight"]


def test_both_file_formats_convert_identically(converted, official_dirs):
  legacy_vars, legacy_d, _ = convert_official(official_dirs["legacy"], model_config())
  zip_vars, zip_d, _ = converted
  for a, b in ((zip_vars, legacy_vars), (zip_d, legacy_d)):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def errors(loaded, converted, official_outputs):
  model, variables = loaded
  _, d_variables, _ = converted
  return official_parity_errors(model, variables, official_outputs,
                                build_discriminator(model_config()), d_variables)


@pytest.mark.parametrize("network,prefix", [
    ("identity encoder", "V_"), ("non-identity encoder", "E_"), ("audio encoder", "A_sync_"),
    ("generator", "G_"), ("infer", "inference_"), ("discriminator", "D_")])
def test_matches_official_outputs(errors, official_outputs, network, prefix):
  expected = {k for k in official_outputs if k.startswith(prefix)}
  mine = {k: v for k, v in errors.items() if k.startswith(prefix)}
  assert set(mine) == expected, f"{network}: outputs not compared: {expected - set(mine)}"
  assert max(mine.values()) <= TOL, mine


def test_infer_outputs_only_what_is_asked(loaded, official_outputs):
  model, variables = loaded
  o = official_outputs
  out = model.apply(variables, nhwc(o["in_reference"]), o["in_spectrogram"][:, 0],
                    nhwc(o["in_driving"]), method=model.infer)
  assert set(out) == {"driven"} and out["driven"].shape == (2, 224, 224, 3)


def test_parameter_counts_equal_official(loaded, parity_dir):
  """Per network: our params == official state dict values minus buffers and unused keys."""
  _, variables = loaded
  spec = json.loads((parity_dir / "official_keys.json").read_text())["networks"]

  def official_count(net, skip):
    return sum(int(np.prod(shape)) for key, shape in spec[net].items() if not skip(key))

  def is_buffer(key):
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked",
                                      "kernel", "weight_u", "weight_v")

  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  p = variables["params"]
  assert count(p["identity_encoder"]) == official_count("V", lambda k: is_buffer(k) or k.startswith("model.fc."))
  assert count(p["nonidentity_encoder"]) == official_count("E", is_buffer)
  assert count(p["audio_encoder"]) == official_count("A_sync", is_buffer)
  assert count(p["generator"]) == official_count(
      "G", lambda k: is_buffer(k) or k.startswith(("style.", "input.", "noises.")))


def test_convert_command_writes_a_loadable_checkpoint(official_dirs, converted, tmp_path, capsys):
  out = tmp_path / "converted"
  assert cli.main(["convert", "--official", str(official_dirs["zip"]), "--out", str(out)]) == 0
  model, variables, _, d_variables = checkpoint.load_export(out, with_discriminator=True)
  zip_vars, zip_d, _ = converted
  jax.tree.map(np.testing.assert_array_equal, variables, zip_vars)
  jax.tree.map(np.testing.assert_array_equal, d_variables, zip_d)
  assert json.loads((out / "config.json").read_text())["model"]["resolution"] == 224
  written = {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()}
  capsys.readouterr()
  # Never overwrites what is written: a second run names the folder in one line and exits non-zero.
  assert cli.main(["convert", "--official", str(official_dirs["zip"]), "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(out) in err[0] and "exists and is not empty" in err[0]
  assert {f: f.stat().st_mtime_ns for f in out.rglob("*") if f.is_file()} == written
