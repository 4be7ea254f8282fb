"""Config files: the SynthTalk stage arguments and the ablations each change what they name."""
import numpy as np
import pytest

from configs import ablations, default, synthtalk
from pcavs_jax.train.stages import stage_schedule


@pytest.mark.parametrize("arg, stages", [
    (None, [("identity", 0), ("sync_trunk", 1000), ("full", 1500)]),
    ("identity_steps=0", [("sync_trunk", 0), ("full", 500)]),
    ("sync_steps=0,identity_steps=200", [("identity", 0), ("full", 200)]),
    ("identity_steps=0,sync_steps=0", [("full", 0)]),
])
def test_synthtalk_stage_arguments(arg, stages):
  assert stage_schedule(synthtalk.get_config(arg)) == stages


def test_synthtalk_aux_losses_turn_on_only_their_weights():
  base = _flat(synthtalk.get_config("minutes=7"))
  got = _flat(synthtalk.get_config("minutes=7,aux_losses=1"))
  diff = {k: v for k, v in got.items() if base[k] != v}
  assert diff == {f"loss.{k}": v for k, v in synthtalk.AUX_LOSSES.items()}
  assert all(base[f"loss.{k}"] == 0.0 for k in synthtalk.AUX_LOSSES)


def _flat(config, prefix=""):
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


@pytest.mark.parametrize("name, changed", [
    ("pose_dim_6", {"model.pose_dim": 6}),
    ("pose_dim_12", {}),
    ("pose_dim_36", {"model.pose_dim": 36}),
    ("no_contrastive", {"loss.contrastive": 0.0, "train.schedule": "identity:1000,full"}),
    ("no_feature_matching", {"loss.feature_matching": 0.0}),
    ("no_pose_augmentation", {"data.augment_pose_source": False}),
    ("fixed_pose", {"model.fixed_pose": True}),
])
def test_each_ablation_changes_only_its_fields(name, changed):
  base = _flat(ablations.get_config("ablation=none"))
  got = _flat(ablations.get_config(f"ablation={name}"))
  diff = {k: v for k, v in got.items() if base[k] != v}
  assert diff == changed


def test_unknown_config_arguments_are_named():
  with pytest.raises(ValueError, match="unknown ablation 'no_mouth'"):
    ablations.get_config("ablation=no_mouth")
  with pytest.raises(ValueError, match="unknown config argument 'minute'"):
    synthtalk.get_config("minute=3")
  assert default.get_config("variant=tiny").model.resolution == 64


# ---- bad configuration: one line naming the setting, a non-zero exit ----------------------------

import os  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from pcavs_jax.train.config import ConfigError, validate_config  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs" / "default.py") + ":variant=tiny"


def _train(tmp_path, *flags: str, devices: int = 1) -> subprocess.CompletedProcess:
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run([sys.executable, "-m", "pcavs_jax.cli.main", "train", "--config", TINY,
                         "--workdir", str(tmp_path / "run"), *flags],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
  assert result.returncode != 0, result.stdout + result.stderr
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("pcavs-jax train: error: "), lines[0]
  return lines[0]


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
  from pcavs_jax.data import records
  from data_pipeline.synthtalk import generate
  out = tmp_path_factory.mktemp("records")
  records.write_clips(generate.generate_clips(0, (0, 1), 1, 8, 64), out, "train")
  return out


def test_an_empty_data_dir_is_named(tmp_path):
  line = _one_error_line(_train(tmp_path))
  assert "config.data_dir is empty" in line


def test_a_missing_data_dir_is_named(tmp_path):
  line = _one_error_line(_train(tmp_path, f"--config.data_dir={tmp_path / 'nowhere'}"))
  assert "config.data_dir=" in line and "no such folder" in line


def test_a_data_dir_without_records_is_named(tmp_path):
  (tmp_path / "empty").mkdir()
  line = _one_error_line(_train(tmp_path, f"--config.data_dir={tmp_path / 'empty'}"))
  assert "config.data_dir=" in line and "no train records" in line


def test_an_unknown_config_field_is_named(tmp_path):
  line = _one_error_line(_train(tmp_path, "--config.train.stges=full"))
  assert "config.train.stges: no such config field" in line and "'stage'" in line


def test_an_unknown_field_set_by_a_config_file_is_named(records_dir):
  config = default.get_config("variant=tiny")
  config.data_dir = str(records_dir)
  config.loss.contrastve = 1.0
  with pytest.raises(ConfigError, match=r"^config\.loss\.contrastve: no such config field"):
    validate_config(config, process_count=1, local_devices=1)


def test_an_unknown_stage_is_named(tmp_path, records_dir):
  line = _one_error_line(_train(tmp_path, f"--config.data_dir={records_dir}",
                                "--config.train.stage=warmup"))
  assert "config.train.stage='warmup': no such stage" in line
  config = default.get_config("variant=tiny")
  config.data_dir = str(records_dir)
  config.train.schedule = "identity:10,warmup"
  with pytest.raises(ConfigError, match=r"config\.train\.schedule .*unknown stage 'warmup'"):
    validate_config(config, process_count=1, local_devices=1)


def test_a_batch_that_does_not_divide_over_the_devices_is_named(tmp_path, records_dir):
  line = _one_error_line(_train(tmp_path, f"--config.data_dir={records_dir}",
                                "--config.data.batch_size=6", devices=4))
  assert "config.data.batch_size=6 does not divide over the 4 devices" in line


@pytest.mark.parametrize("batches,size", [(-1, 64), (2, 0)])
def test_bad_precise_statistics_batches_are_named(records_dir, batches, size):
  config = default.get_config("variant=tiny")
  config.data_dir = str(records_dir)
  config.train.precise_bn_batches, config.train.precise_bn_batch_size = batches, size
  with pytest.raises(ConfigError, match=rf"^config\.train\.precise_bn_batches={batches} and "
                                        rf"precise_bn_batch_size={size}: need 0"):
    validate_config(config, process_count=1, local_devices=1)


@pytest.mark.parametrize("text,problem", [("2000", "is not STEP:SCALE"),
                                          ("2000:fast", "is not STEP:SCALE"),
                                          ("2000:0", "needs a step >= 0 and a scale > 0")])
def test_bad_learning_rate_steps_are_named(records_dir, text, problem):
  config = default.get_config("variant=tiny")
  config.data_dir = str(records_dir)
  config.train.lr_steps = text
  with pytest.raises(ConfigError, match=rf"^config\.train\.lr_steps='{text}': .*{problem}"):
    validate_config(config, process_count=1, local_devices=1)


def test_a_valid_config_passes(records_dir):
  config = default.get_config("variant=tiny")
  config.data_dir = str(records_dir)
  validate_config(config, process_count=1, local_devices=4)


def test_too_few_identity_classes_are_named(records_dir):
  config = default.get_config("variant=tiny")
  config.data_dir = str(records_dir)
  config.model.num_classes = 1   # the records hold identity labels 0 and 1
  with pytest.raises(ConfigError, match=r"^config\.model\.num_classes=1 is too small: .* up to 1 "):
    validate_config(config, process_count=1, local_devices=1)


def test_a_truth_loss_without_ground_truth_is_named(tmp_path):
  from pcavs_jax.data import records
  from pcavs_jax.data.clips import Clip
  rng = np.random.default_rng(0)
  clips = [Clip(f"c{i}", f"id{i}", i, rng.integers(0, 255, (8, 64, 64, 3), np.uint8),
                np.zeros(8 * 640, np.float32), np.zeros((32, 80), np.float32)) for i in range(2)]
  records.write_clips(clips, tmp_path, "train")      # real video: no per-frame truth
  config = default.get_config("variant=tiny")
  config.data_dir = str(tmp_path)
  validate_config(config, process_count=1, local_devices=1)
  config.loss.pose_truth = 1.0
  with pytest.raises(ConfigError, match=r"^config\.loss\.pose_truth=1\.0 needs per-frame ground "
                                        r"truth yaw, pitch, roll, which config\.data_dir="):
    validate_config(config, process_count=1, local_devices=1)
