"""Model checkpoints: the exported form (Orbax variables + config) and `load_checkpoint`.

An exported checkpoint is a folder:
  config.json       the `config.model` the variables belong to, and where they came from;
  variables/        Orbax StandardSave of {'params', 'batch_stats'} of `PCAVS`;
  discriminator/    the same for D (optional).
`load_checkpoint` also reads a folder of official `.pth` files (converting on the fly) and a
training workdir (the generator side of its latest Orbax checkpoint).
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

CONFIG_FILE = "config.json"
TRAIN_CHECKPOINT_DIR = "checkpoints"


def _checkpointer():
  import orbax.checkpoint as ocp  # deferred: orbax pulls in a lot
  return ocp.StandardCheckpointer()


def check_export_target(out_dir: str | os.PathLike) -> pathlib.Path:
  """The absolute export folder; FileExistsError if it already holds anything."""
  out = pathlib.Path(out_dir).absolute()
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"checkpoint output folder {out} exists and is not empty")
  return out


def save_export(out_dir: str | os.PathLike, variables: dict, model_config,
                d_variables: dict | None = None, source: str = "") -> pathlib.Path:
  """Writes an exported checkpoint; refuses to overwrite a non-empty folder."""
  out = check_export_target(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  ckpt = _checkpointer()
  ckpt.save(out / "variables", jax.tree.map(np.asarray, variables))
  if d_variables is not None:
    ckpt.save(out / "discriminator", jax.tree.map(np.asarray, d_variables))
  ckpt.wait_until_finished()
  meta = {"model": model_config.to_dict(), "source": source, "format": "pcavs-jax export v1"}
  (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
  return out


def _restore(path: pathlib.Path, abstract: Any) -> Any:
  return _checkpointer().restore(path, jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract))


def load_export(path: str | os.PathLike, with_discriminator: bool = False):
  """Reads an exported checkpoint: (model, variables[, discriminator, d_variables])."""
  from pcavs_jax.models.pcavs import abstract_variables, build_discriminator, build_model
  path = pathlib.Path(path).absolute()
  meta = json.loads((path / CONFIG_FILE).read_text())
  model_config = ml_collections.ConfigDict(meta["model"])
  model = build_model(model_config)
  variables = _restore(path / "variables", abstract_variables(model))
  if not with_discriminator:
    return model, variables
  disc = build_discriminator(model_config)
  if not (path / "discriminator").exists():
    raise FileNotFoundError(f"{path} holds no discriminator")
  r = model_config.resolution
  d_abstract = jax.eval_shape(disc.init, jax.random.key(0), np.zeros((1, r, r, 3), np.float32))
  return model, variables, disc, _restore(path / "discriminator", d_abstract)


def is_official_checkpoint(path: str | os.PathLike) -> bool:
  """Whether `path` is a folder of official PyTorch files (`<epoch>_net_G.pth`, ...); their
  models were trained on faces cropped by the official loader."""
  p = pathlib.Path(path)
  return p.is_dir() and any(p.glob("*_net_G.pth"))


def load_checkpoint(path: str | os.PathLike, model_config=None, step: int | None = None,
                    ema: bool = True):
  """Loads PC-AVS for inference from any checkpoint form the project knows.

  Args:
    path: a folder of official `<epoch>_net_*.pth` files, an exported checkpoint (config.json +
      variables/), or a training workdir.
    model_config: the `config.model` of official files (default: the official configuration).
    step, ema: a training workdir's step (default: the latest) and whether to read its moving
      average (see `load_training_checkpoint`).

  Returns:
    (model, variables): call `model.apply(variables, ..., method=model.infer)`.

  Raises:
    FileNotFoundError: nothing loadable at `path`.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"checkpoint not found: {path}")
  workdir = (path / TRAIN_CHECKPOINT_DIR).is_dir()
  if step is not None:
    if not workdir:
      raise ValueError(f"step {step} asked of {path}, which is not a training workdir")
    return load_training_checkpoint(path, step, ema=ema)
  if (path / CONFIG_FILE).exists():
    return load_export(path)
  if is_official_checkpoint(path):
    from pcavs_jax.models.config import model_config as official_model_config
    from pcavs_jax.convert.official import convert_official
    from pcavs_jax.models.pcavs import build_model
    model_config = model_config or official_model_config()
    variables, _, report = convert_official(path, model_config)
    if not report.ok:
      raise ValueError(f"official checkpoint {path} does not match the model:\n{report.summary()}")
    return build_model(model_config), variables
  if workdir:
    return load_training_checkpoint(path, ema=ema)
  raise FileNotFoundError(f"{path}: neither an exported checkpoint ({CONFIG_FILE} + variables/), "
                          "a training workdir (checkpoints/) nor a folder of official "
                          "'<epoch>_net_G.pth' files")


def _training_manager(workdir: str | os.PathLike):
  import orbax.checkpoint as ocp
  directory = pathlib.Path(workdir).absolute() / TRAIN_CHECKPOINT_DIR
  return directory, ocp.CheckpointManager(directory, item_names=("state", "config"))


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
  """The steps of the checkpoints kept in a training workdir, oldest first."""
  return sorted(_training_manager(workdir)[1].all_steps())


def load_training_checkpoint(workdir: str | os.PathLike, step: int | None = None,
                             ema: bool = True):
  """The generator side of a training workdir's checkpoint (latest step by default).

  Args:
    workdir: the training workdir.
    step: the checkpoint's step (default: the latest).
    ema: read the moving average of the parameters when the run kept one
      (`train.ema_decay` > 0); False reads the trained parameters themselves.

  Returns:
    (model, variables) with the BatchNorm statistics of the generator-side networks.
  """
  import orbax.checkpoint as ocp
  from pcavs_jax.models.pcavs import abstract_variables, build_model
  directory, manager = _training_manager(workdir)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{directory} holds no checkpoint")
  config = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  model_config = ml_collections.ConfigDict(config["model"])
  model = build_model(model_config)
  # Restored without a target: plain nested dicts, enough to read the generator side.
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  params = (ema and state.get("ema_params")) or state["g_params"]
  variables = {"params": params, "batch_stats": state["batch_stats"]["g"]}
  want = jax.tree.structure(abstract_variables(model))
  if jax.tree.structure(variables) != want:
    raise ValueError(f"{directory} step {step}: the generator side does not match its config.model")
  return model, variables
