"""Tiny training in a fresh process, for the multi-device and multi-process tests.

  python tests/train_worker.py steps --devices N --out F.json
      two train steps on a fixed global batch of 8 over N simulated CPU devices
  python tests/train_worker.py distributed --process-id I --num-processes P --port PORT \
      --records DIR --workdir DIR --out F.json
      `train_and_evaluate` as process I of P (CPU collectives over localhost); --steps,
      --checkpoint-every and --stage change the 2-step full-stage run
"""
import argparse
import json
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
  p = argparse.ArgumentParser()
  p.add_argument("mode", choices=["steps", "distributed"])
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--process-id", type=int, default=0)
  p.add_argument("--num-processes", type=int, default=1)
  p.add_argument("--port", type=int, default=0)
  p.add_argument("--records", default="")
  p.add_argument("--workdir", default="")
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--checkpoint-every", type=int, default=2)
  p.add_argument("--stage", default="full")
  p.add_argument("--out", required=True)
  return p.parse_args()


def _config(records: str = ""):
  from configs.default import get_config
  config = get_config("variant=tiny")
  config.data.batch_size = 8
  config.data_dir = records
  config.model.hourglass_dropout = 0.0   # no per-device randomness: devices must agree exactly
  config.train.noise_injection = False
  # Adam divides by sqrt(v) + eps: with the default eps a near-zero gradient component whose
  # float rounding differs between device layouts moves its parameter by a whole +-lr step.
  # A larger eps keeps updates proportional to such gradients, so layouts stay comparable.
  config.train.eps = 1e-2
  return config


def _checksums(params) -> dict[str, float]:
  import jax
  import numpy as np
  return {k: float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(v)))
          for k, v in params.items()}


def run_steps(devices: int) -> dict:
  import jax
  import numpy as np
  from flax import jax_utils

  from pcavs_jax.train import runtime
  from pcavs_jax.train import trainer as train
  from pcavs_jax.train import steps as train_steps
  from pcavs_jax.models.pcavs import build_discriminator, build_model
  config = _config()
  model = build_model(config.model).clone(bn_axis_name=train_steps.AXIS)
  disc = build_discriminator(config.model)
  state = jax_utils.replicate(train.initial_state(config, model, disc))
  step = runtime.pmapped_train_step(model, disc, config, config.train.stage)
  rng = np.random.default_rng(0)
  r, b = config.model.resolution, config.data.batch_size
  batch = {"target": rng.uniform(-1, 1, (b, 1, r, r, 3)), "pose_source": rng.uniform(-1, 1, (b, 1, r, r, 3)),
           "reference": rng.uniform(-1, 1, (b, 1, r, r, 3)), "mel": rng.uniform(0, 1, (b, 1, 80, 20)),
           "label": rng.integers(0, config.model.num_classes, (b,))}
  batch = {k: v.astype(np.int32 if k == "label" else np.float32).reshape((devices, b // devices) + v.shape[1:])
           for k, v in batch.items()}
  out = {"losses": []}
  for _ in range(2):
    state, metrics = step(state, batch)
    out["losses"].append({k: float(v[0]) for k, v in metrics.items() if k != "all_finite"})
  out["checksums"] = _checksums(jax_utils.unreplicate(state).g_params)
  return out


def run_distributed(args) -> dict:
  import ml_collections

  from pcavs_jax.train import trainer as train
  config = _config(args.records)
  config.num_train_steps = args.steps
  config.log_every = 1
  config.checkpoint_every = args.checkpoint_every
  config.train.stage = args.stage
  config.distributed = ml_collections.ConfigDict({
      "coordinator_address": f"localhost:{args.port}", "num_processes": args.num_processes,
      "process_id": args.process_id})
  state = train.train_and_evaluate(config, args.workdir)
  import jax
  return {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "device_count": jax.device_count(), "step": int(state.step),
          "checksums": _checksums(state.g_params), "d_checksum": _checksums({"d": state.d_params})["d"]}


def main() -> None:
  args = _args()
  if args.mode == "steps":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  sys.path.insert(0, str(REPO))
  result = run_steps(args.devices) if args.mode == "steps" else run_distributed(args)
  pathlib.Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
  main()
