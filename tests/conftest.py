"""Shared pytest fixtures: where the official parity fixtures live, and markers."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# No persistent compilation cache: reloading serialised XLA:CPU executables has crashed the
# suite (a segfault in deserialisation, see jax-ml/jax#28908), so every program compiles afresh.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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


@pytest.fixture(scope="session")
def random_records(tmp_path_factory) -> str:
  """Eight random 64-px clips of four identities as clip records (two shards), for training tests."""
  import numpy as np
  from pcavs_jax.data.records import write_clips
  from pcavs_jax.data import audio
  from pcavs_jax.data.clips import Clip
  rng = np.random.default_rng(0)
  out = tmp_path_factory.mktemp("random_records")

  def clips():
    for i in range(8):
      wav = (0.1 * rng.standard_normal(16 * 640)).astype(np.float32)
      yield Clip(clip_id=f"clip{i}", identity=f"id{i % 4}", label=i % 4,
                 frames=rng.integers(0, 255, (16, 64, 64, 3), dtype=np.uint8), audio=wav,
                 mel=audio.melspectrogram(wav))
  write_clips(clips(), out, "train", num_shards=2)
  return str(out)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> pathlib.Path:
  """A tiny random-weight exported checkpoint (64 px), shared by the inference tests."""
  import inference_testutil
  return inference_testutil.tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def driver(checkpoint):
  from pcavs_jax.infer import load_driver
  return load_driver(checkpoint, batch_size=4)
