"""Config files: the SynthTalk stage arguments and the ablations each change what they name."""
import pytest

from configs import ablations, default, synthtalk
from pcavs_jax.train.state import stage_schedule


@pytest.mark.parametrize("arg, stages", [
    (None, [("identity", 0), ("sync_trunk", 1000), ("full", 1500)]),
    ("identity_steps=0", [("sync_trunk", 0), ("full", 500)]),
    ("sync_steps=0,identity_steps=200", [("identity", 0), ("full", 200)]),
    ("identity_steps=0,sync_steps=0", [("full", 0)]),
])
def test_synthtalk_stage_arguments(arg, stages):
  assert stage_schedule(synthtalk.get_config(arg)) == stages


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
