"""Shared pytest fixtures: where the official parity fixtures live, and markers."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PARITY_DIR = pathlib.Path(os.environ.get("PCAVS_PARITY_DIR", REPO.parent / "shared" / "parity"))


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running; excluded from the default suite (-m 'not slow')")


@pytest.fixture(scope="session")
def parity_dir() -> pathlib.Path:
  """The official parity fixtures, read in place; skips the test where they are absent."""
  if not (PARITY_DIR / "official_outputs.npz").exists():
    pytest.skip(f"official parity fixtures not found at {PARITY_DIR} "
                "(expected ../shared/parity beside the repo, or set PCAVS_PARITY_DIR)")
  return PARITY_DIR


@pytest.fixture(scope="session")
def official_outputs(parity_dir):
  import numpy as np
  return dict(np.load(parity_dir / "official_outputs.npz"))


@pytest.fixture(scope="session")
def official_weights(parity_dir):
  """The `official_weights` module of the parity folder (state_dict(NET) -> {torch key: array})."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("official_weights", parity_dir / "official_weights.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
