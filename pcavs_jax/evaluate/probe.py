"""The training probe: the mechanism measures and a small generation check, logged by the
training loop every `config.eval_every` steps (`training_probe(config, model)`)."""
from __future__ import annotations

import math
import pathlib
import time

from pcavs_jax.evaluate import cross_driven, mechanisms, scoring


class TrainingProbe:
  """The mechanism measures and a small generation check, for the training loop.

  Loads the sets of a `cross_driven` folder once; each call scores the given variables:
  mechanisms on every triple, generation on the first `num_triples` triples of each set (None:
  all of them; the baselines averaged over the same triples). Returns flat scalars, '<set>/<measure>'.
  """

  def __init__(self, model, folder: str, num_triples: int | None = 8, batch_size: int = 32):
    from pcavs_jax.data.synthtalk import eval_sets
    self.model = model
    self.batch_size = batch_size
    self.sets = {}
    for name, path in eval_sets.set_paths(folder).items():
      eval_set = eval_sets.load_eval_set(path)
      if eval_set.resolution != model.resolution:
        continue
      ids = ([t.triple_id for t in eval_set.triples[:num_triples]]
             if num_triples is None or num_triples > 0 else [])
      baselines = scoring.baseline_rows(path, eval_set, ids) if ids else {}
      self.sets[name] = (eval_set, ids, baselines)

  def __call__(self, variables) -> dict[str, float]:
    start = time.time()
    out = {}
    for name, (eval_set, ids, baselines) in self.sets.items():
      codes = mechanisms.encode_set(self.model, variables, eval_set)
      mech = mechanisms.mechanism_measures(codes, eval_set)
      out.update({f"{name}/{k}": v for k, v in mech.items()})
      if ids:
        frames = cross_driven.generate_cross_driven(self.model, variables, eval_set,
                                                    self.batch_size, ids)
        rows, _ = cross_driven.generation_rows(frames, eval_set, baselines)
        out.update({f"{name}/{k}": float(rows["model"][k]) for k in cross_driven.ROW_KEYS})
        out[f"{name}/copy_reference_ssim"] = baselines.get("copy_reference", {}).get(
            "ssim", math.nan)
    out["probe_seconds"] = time.time() - start
    return out


def training_probe(config, model) -> TrainingProbe | None:
  """The probe a training run logs every `config.eval_every` steps: None unless that is set
  and the eval folder (`config.eval_dir`, default <data_dir>/cross_driven) holds a set."""
  from pcavs_jax.data.synthtalk import eval_sets
  if not config.get("eval_every"):
    return None
  folder = config.get("eval_dir") or str(pathlib.Path(config.data_dir) / "cross_driven")
  if not pathlib.Path(folder).is_dir() or not eval_sets.set_paths(folder):
    return None
  return TrainingProbe(model, folder, config.get("eval_triples", 8))
