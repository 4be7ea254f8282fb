"""The demo's training progress bar: step, stage, losses, and the measures printed above it."""


def test_demo_progress_bar_shows_step_stage_losses_and_measures(capsys):
  from configs import synthtalk
  from pcavs_jax.cli.demo import TrainingProgress
  config = synthtalk.get_config("minutes=1,identity_steps=10,sync_steps=10")
  progress = TrainingProgress(config)
  progress(5, {"identity_ce": 2.5, "steps_per_sec": 12.0})
  assert "stage=identity" in str(progress.bar) and "id=2.5" in str(progress.bar)
  progress(25, {"g_loss": 150.0, "d_loss": 1.5, "steps_per_sec": 3.0})
  assert "stage=full" in str(progress.bar) and "G=150" in str(progress.bar)
  progress(25, {"seen/sync_top1": 0.5, "seen/ssim": 0.7, "probe_seconds": 3.0})
  progress.close()
  err = capsys.readouterr()
  assert "seen/sync_top1 0.5" in err.out + err.err and "probe_seconds" not in err.out + err.err
