"""The stage schedule of a run: parsing `config.train.schedule`, the stage at a step."""
import pytest

from pcavs_jax.train import stages
from pcavs_jax.train.optimizers import train_config


def test_stage_schedule_parsing():
  cfg = train_config()
  assert stages.stage_schedule(cfg) == [("full", 0)]
  cfg.stage = "sync"
  assert stages.stage_schedule(cfg) == [("sync", 0)]
  cfg.schedule = "identity:1000, sync:500, full"
  schedule = stages.stage_schedule(cfg)
  assert schedule == [("identity", 0), ("sync", 1000), ("full", 1500)]
  assert [stages.stage_at(schedule, s) for s in (0, 999, 1000, 1499, 1500, 10**6)] == [
      "identity", "identity", "sync", "sync", "full", "full"]
  assert [stages.stage_first_step(schedule, s) for s in (0, 999, 1000, 1499, 1500, 10**6)] == [
      0, 0, 1000, 1000, 1500, 1500]
  for bad, match in (("identity:10,gan", "unknown stage 'gan'"),
                     ("identity,full", "needs a positive step count"),
                     ("identity:0,full", "needs a positive step count"),
                     ("identity:10,full:5", "last stage runs to the end")):
    cfg.schedule = bad
    with pytest.raises(ValueError, match=match):
      stages.stage_schedule(cfg)
