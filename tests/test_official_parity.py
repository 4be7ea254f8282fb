"""End-to-end parity: official-layout .pth files -> public converter -> load_checkpoint -> numbers.

The state dicts come from ../shared/parity/official_weights.py, written as .pth files in both
PyTorch formats (zip, and the legacy format of PyTorch <= 1.5 that wrote the official files).
"""
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (a dev-only dependency) writes the .pth fixtures")

from configs.default import model_config  # noqa: E402
from pcavs_jax import checkpoint, cli  # noqa: E402
from pcavs_jax.convert.official import convert_official  # noqa: E402
from pcavs_jax.models.pcavs import build_discriminator  # noqa: E402

TOL = 1e-4
NETS = ("G", "V", "E", "A_sync", "D")


def _nhwc(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (0, 2, 3, 1))


def _max_err(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


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


def test_encoders_match_official(loaded, official_outputs):
  model, variables = loaded
  o = official_outputs
  ref = _nhwc(o["in_reference"])
  identity = model.apply(variables, ref, method=model.encode_identity)
  visual = model.apply(variables, ref, method=model.encode_nonidentity)
  audio = model.apply(variables, o["in_spectrogram"][:, 0], method=model.encode_audio)
  pairs = {
      "V_id_vector": identity["id_vector"], "V_id_map": identity["id_map"],
      "V_class_scores": identity["class_scores"], "E_feature": visual["feature"],
      "E_mouth": visual["mouth"], "E_headpose": visual["headpose"],
      "E_mouth_embed": visual["mouth_embed"], "E_pose_code": visual["pose_code"],
      "A_sync_feature": audio["mouth"], "A_sync_mouth_embed": audio["mouth_embed"],
  }
  errors = {}
  for key, ours in pairs.items():
    want = o[key] if o[key].ndim != 4 else _nhwc(o[key])
    errors[key] = _max_err(ours, want)
  assert max(errors.values()) <= TOL, errors


def test_generator_matches_official(loaded, official_outputs):
  model, variables = loaded
  o = official_outputs
  style = np.concatenate([o["V_id_vector"], o["E_mouth_embed"], o["E_pose_code"]], axis=1)
  image = model.apply(variables, style, _nhwc(o["V_id_map"]), method=model.generate)
  assert _max_err(image, _nhwc(o["G_image_from_video_features"])) <= TOL


def test_infer_matches_official(loaded, official_outputs):
  model, variables = loaded
  o = official_outputs
  out = model.apply(variables, _nhwc(o["in_reference"]), o["in_spectrogram"][:, 0],
                    _nhwc(o["in_driving"]), with_reference_pose=True, method=model.infer)
  assert out["driven"].shape == (2, 224, 224, 3)
  errors = {"driven": _max_err(out["driven"], _nhwc(o["inference_driven_pose"])),
            "reference_pose": _max_err(out["reference_pose"], _nhwc(o["inference_reference_pose"]))}
  assert max(errors.values()) <= TOL, errors
  plain = model.apply(variables, _nhwc(o["in_reference"]), o["in_spectrogram"][:, 0],
                      _nhwc(o["in_driving"]), method=model.infer)
  assert set(plain) == {"driven"}


def test_discriminator_matches_official(converted, official_outputs):
  _, d_variables, _ = converted
  o = official_outputs
  disc = build_discriminator(model_config())
  scales = disc.apply(d_variables, _nhwc(o["inference_driven_pose"][:1]))
  errors = {}
  for s, outputs in enumerate(scales):
    errors[f"D_scale{s}_logits"] = _max_err(outputs[-1], _nhwc(o[f"D_scale{s}_logits"]))
    for j, feature in enumerate(outputs[1:]):
      mean_abs = np.abs(np.asarray(feature)).mean(axis=(0, 1, 2))
      errors[f"D_scale{s}_layer{j}"] = _max_err(mean_abs, o[f"D_scale{s}_layer{j}_mean_abs"])
  assert len(errors) == 12
  assert max(errors.values()) <= TOL, errors


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


def test_convert_command_writes_a_loadable_checkpoint(official_dirs, converted, tmp_path):
  out = tmp_path / "converted"
  assert cli.main(["convert", "--official", str(official_dirs["zip"]), "--out", str(out)]) == 0
  model, variables, _, d_variables = checkpoint.load_export(out, with_discriminator=True)
  zip_vars, zip_d, _ = converted
  jax.tree.map(np.testing.assert_array_equal, variables, zip_vars)
  jax.tree.map(np.testing.assert_array_equal, d_variables, zip_d)
  assert json.loads((out / "config.json").read_text())["model"]["resolution"] == 224
  with pytest.raises(FileExistsError):  # never overwrites what is written
    cli.main(["convert", "--official", str(official_dirs["zip"]), "--out", str(out)])
