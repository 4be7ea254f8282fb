"""The official training losses and gradients (official_grads.npz), by the train step's functions.

Runs `scripts/grad_parity_report.py`, which converts the parity weights through
`convert_official`, computes one full-stage step with `pcavs_jax.train.steps` and compares every
loss term and per-tensor gradient with the official ones.
"""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch (a dev-only dependency) writes the .pth fixtures")

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():
  spec = importlib.util.spec_from_file_location("grad_parity_report",
                                                REPO / "scripts" / "grad_parity_report.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module   # its dataclasses look their module up
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow  # the float64 reference: ~10 min and 13 GB on a 2-core CPU
def test_official_training_losses_and_gradients(report, parity_dir, capsys):
  status = report.main(["--fixture", str(parity_dir / "official_grads.npz")])
  out = capsys.readouterr().out
  assert status == 0, out
  assert "skipped (noise-injection weights): 11" in out
  for term in ("GAN_Feat_audio / feature_matching_audio", "loss_cls / identity_ce", "D_real / d_real"):
    assert term in out


def test_a_wrong_gradient_is_caught(report, parity_dir):
  """A 1 % error in one small tensor's gradient is outside the tolerance and far from exact."""
  fixture = dict(np.load(parity_dir / "official_grads.npz"))
  key = "to_mouth.0.bias"
  exact = np.asarray(fixture[f"grad_E/{key}_full"], np.float64)
  good = report.compare_network("E", fixture, {key: exact}, {key: exact})
  assert all(within for _, within in good["rows"][key].values())
  assert good["official_vs_exact"] < 1e-6
  wrong = 1.01 * exact
  bad = report.compare_network("E", fixture, {key: wrong}, {key: exact})
  assert bad["rows"][key]["norm"][0] == pytest.approx(0.01, rel=1e-3)
  assert not bad["rows"][key]["norm"][1] and not bad["rows"][key]["full"][1]
  assert bad["ours_vs_exact"] == pytest.approx(0.01, rel=1e-2)


def test_the_converter_map_is_traced_exactly(report, official_weights, parity_dir):
  """Every official element of a network lands in exactly one parameter element, and mapping the
  converted weights back gives the official tensors."""
  from pcavs_jax.models.config import model_config
  fixture = dict(np.load(parity_dir / "official_grads.npz"))
  sd = official_weights.state_dict("A_sync")
  keys = report.parameter_keys(fixture, "A_sync", sd)
  layout = report.official_layout("A_sync", sd, keys, model_config())
  params = report._params_of("A_sync", sd, model_config())
  back = layout.to_official(params)
  for key in keys:
    np.testing.assert_array_equal(back[key], sd[key])
