"""Pure PC-AVS train steps, written for `jax.pmap(axis_name='batch')`.

One step is a discriminator update followed by a generator-side update against the new D, as in
pix2pixHD-style training. The generator-side forward (E_i, E_n, E_a, G) runs once per step under
`jax.vjp`: D trains on its detached fakes, then the G losses are taken against the updated D and
pulled back through the same forward. The official code repeats the forward for its G step with
the same G weights, so the numbers agree up to the BatchNorm running statistics and dropout draw,
and a third of the step's work is saved.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from pcavs_jax import losses
from pcavs_jax.train_state import GANTrainState, STAGE_TRAINABLE

Batch = dict[str, jax.Array]
AXIS = "batch"


def _flatten_clip(batch: Batch) -> Batch:
  """[B, clip_len, ...] -> [B * clip_len, ...]; references repeated per target frame."""
  b, clip_len = batch["target"].shape[:2]
  flat = lambda x: x.reshape((b * clip_len,) + x.shape[2:])
  reference = jnp.repeat(batch["reference"], clip_len, axis=0)
  return {"target": flat(batch["target"]), "pose_source": flat(batch["pose_source"]),
          "mel": flat(batch["mel"]), "reference": reference,
          "label": jnp.repeat(batch["label"], clip_len, axis=0)}


def _g_rngs(rng: jax.Array, noise_injection: bool = True) -> dict[str, jax.Array]:
  dropout, noise = jax.random.split(rng)
  return {"dropout": dropout, "noise": noise} if noise_injection else {"dropout": dropout}


def _g_forward(g_params, batch_stats, batch: Batch, rng, *, model, stage: str,
               noise_injection: bool = True):
  """The generator-side forward of a stage: (outputs the losses read, new batch stats)."""
  variables = {"params": g_params, "batch_stats": batch_stats}
  kw = dict(rngs=_g_rngs(rng, noise_injection), mutable=["batch_stats"])
  if stage == "identity":
    out, new = model.apply(variables, batch["reference"][:, 0], train=True,
                           method=model.encode_identity, **kw)
    return {"class_scores": out["class_scores"]}, new["batch_stats"]
  if stage in ("sync", "sync_trunk"):
    def sync_forward(module, pose_source, mel):
      feature = module.nonidentity_encoder.features(pose_source, train=True)
      if stage == "sync":
        feature = lax.stop_gradient(feature)
      visual_mouth = module.nonidentity_encoder.to_mouth(feature)
      return visual_mouth, module.audio_encoder(mel, train=True)
    (visual, audio), new = model.apply(variables, batch["pose_source"], batch["mel"],
                                       method=sync_forward, **kw)
    return {"visual_mouth": visual, "audio_mouth": audio}, new["batch_stats"]
  out, new = model.apply(variables, batch["reference"], batch["mel"], batch["pose_source"],
                         train=True, **kw)
  keep = {"fake_visual": out["fake_visual"], "fake_audio": out["fake_audio"],
          "visual_mouth": out["visual"]["mouth"], "audio_mouth": out["audio"]["mouth"],
          "class_scores": out["identity"]["class_scores"]}
  return keep, new["batch_stats"]


def _g_losses(outputs, d_out, batch: Batch, loss_config, vgg_params) -> tuple[jax.Array, dict]:
  """The generator-side losses of whichever outputs the stage produced."""
  w = loss_config
  terms: dict[str, jax.Array] = {}
  if "class_scores" in outputs and w.identity > 0:
    terms["identity_ce"] = w.identity * losses.cross_entropy_loss(outputs["class_scores"], batch["label"])
  if "audio_mouth" in outputs:
    # The contrastive negatives are the rest of the global batch, as the official loss sees
    # the whole (DataParallel-gathered) batch: gather every device's features first. Each device
    # then holds the global loss; the gather's transpose sums its cotangents over devices, so the
    # pmean-ed gradients equal the single-device gradients of the same global batch.
    gather = lambda x: lax.all_gather(x, AXIS, tiled=True)
    _, parts = losses.sync_loss(gather(outputs["visual_mouth"]), gather(outputs["audio_mouth"]),
                                contrastive_weight=w.contrastive, l1_weight=w.crossmodal_l1,
                                cosine_scale=w.get("sync_cosine_scale", 0.0))
    terms.update(parts)
  if d_out is not None:
    b = batch["target"].shape[0]
    fake_v, fake_a, real = _split_scales(d_out, b)
    for name, fake_d in (("visual", fake_v), ("audio", fake_a)):
      terms[f"gan_{name}"] = w.gan * losses.hinge_g_loss(fake_d)
      if w.feature_matching > 0:
        terms[f"feature_matching_{name}"] = losses.feature_matching_loss(
            fake_d, real, lambda_feat=w.feature_matching, lambda_image=w.image)
      fake = outputs[f"fake_{name}"]
      if w.l1_image > 0:
        terms[f"l1_image_{name}"] = w.l1_image * losses.l1_loss(fake, batch["target"])
      if w.mouth_l1 > 0:
        terms[f"mouth_l1_{name}"] = w.mouth_l1 * losses.box_l1_loss(fake, batch["target"],
                                                                   w.mouth_box)
      if vgg_params is not None and w.vgg > 0:
        from pcavs_jax.models.vgg import perceptual_loss
        terms[f"vgg_{name}"] = w.vgg * perceptual_loss(vgg_params, fake, batch["target"])
  total = sum(terms.values())
  return total, terms


def _split_scales(d_out, b: int):
  """D outputs on concat[fake_visual, fake_audio, real] -> three per-scale output lists."""
  parts = ([], [], [])
  for scale in d_out:
    for i in range(3):
      parts[i].append([x[i * b:(i + 1) * b] for x in scale])
  fake_v, fake_a, real = parts
  real = jax.tree.map(lax.stop_gradient, real)
  return fake_v, fake_a, real


def train_step(state: GANTrainState, batch: Batch, *, model, discriminator, config,
               stage: str | None = None, vgg_params=None
               ) -> tuple[GANTrainState, dict[str, jax.Array]]:
  """One D update then one G-side update; returns the new state and pmean-ed scalar metrics.

  `stage` defaults to config.train.stage; the state's optimisers must be that stage's.
  """
  stage = stage or config.train.stage
  batch = _flatten_clip(batch)
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), lax.axis_index(AXIS))
  g_rng, d_rng = jax.random.split(rng)
  forward = functools.partial(_g_forward, batch=batch, rng=g_rng, model=model, stage=stage,
                              noise_injection=config.train.get("noise_injection", True))
  outputs, g_vjp, g_stats = jax.vjp(lambda p: forward(p, state.batch_stats["g"]),
                                    state.g_params, has_aux=True)
  metrics: dict[str, jax.Array] = {}
  d_params, d_stats, d_opt_state = state.d_params, state.batch_stats["d"], state.d_opt_state
  gan = "fake_visual" in outputs

  if gan:
    real = batch["target"]
    fakes = lax.stop_gradient(jnp.concatenate([outputs["fake_visual"], outputs["fake_audio"]]))

    def d_loss_fn(params):
      d_out, new = discriminator.apply({"params": params, "batch_stats": d_stats},
                                       jnp.concatenate([fakes, real]), train=True,
                                       mutable=["batch_stats"])
      n = fakes.shape[0]
      fake_d = [[x[:n] for x in scale] for scale in d_out]
      real_d = [[x[n:] for x in scale] for scale in d_out]
      d_fake = losses.hinge_d_loss(fake_d, real=False)
      d_real = losses.hinge_d_loss(real_d, real=True)
      return config.loss.gan * (d_fake + d_real), ({"d_fake": d_fake, "d_real": d_real},
                                                   new["batch_stats"])

    (d_loss, (d_terms, d_stats)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
    d_grads = lax.pmean(d_grads, AXIS)
    updates, d_opt_state = state.d_tx.update(d_grads, d_opt_state, d_params)
    d_params = jax.tree.map(jnp.add, d_params, updates)
    metrics.update(d_terms, d_loss=d_loss, grad_norm_discriminator=_norm(d_grads))

  def g_loss_fn(outs):
    d_out = None
    if gan:
      images = jnp.concatenate([outs["fake_visual"], outs["fake_audio"], batch["target"]])
      # D's spectral-norm vectors are not advanced here: D already stepped on this batch.
      d_out = discriminator.apply({"params": d_params, "batch_stats": d_stats}, images, train=False)
    return _g_losses(outs, d_out, batch, config.loss, vgg_params)

  (g_loss, g_terms), out_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(outputs)
  (g_grads,) = g_vjp(out_grads)
  g_grads = lax.pmean(g_grads, AXIS)
  updates, g_opt_state = state.g_tx.update(g_grads, state.g_opt_state, state.g_params)
  g_params = jax.tree.map(jnp.add, state.g_params, updates)
  g_stats = _merge_stats(state.batch_stats["g"], g_stats)
  metrics.update(g_terms, g_loss=g_loss)
  metrics.update({f"grad_norm_{k}": _norm(v) for k, v in g_grads.items()
                  if k in _trained_networks(stage)})
  metrics.update(param_norm_generator_side=_norm(g_params), param_norm_discriminator=_norm(d_params))
  metrics = lax.pmean(metrics, AXIS)
  # Losses, gradient norms and the updated parameters' norms: a state is only saved when all
  # of them are finite.
  metrics["all_finite"] = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
  new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                            g_opt_state=g_opt_state, d_opt_state=d_opt_state,
                            batch_stats={"g": g_stats, "d": d_stats}).update_ema(state.step)
  return new_state, metrics


def _merge_stats(old, new):
  """Stages update only the BatchNorm statistics of the networks they run."""
  merged = dict(old)
  merged.update(new)
  return merged


def _trained_networks(stage: str) -> tuple[str, ...]:
  patterns = STAGE_TRAINABLE[stage]
  if patterns is None:
    return ("identity_encoder", "nonidentity_encoder", "audio_encoder", "generator")
  return tuple(sorted({p[0] for p in patterns}))


def _norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def sample_step(g_params, batch_stats, batch: Batch, *, model) -> dict[str, jax.Array]:
  """Eval-mode reconstructions for image grids: audio-driven and visual-driven fakes."""
  batch = _flatten_clip(batch)
  out = model.apply({"params": g_params, "batch_stats": batch_stats}, batch["reference"],
                    batch["mel"], batch["pose_source"], train=False)
  return {"reference": batch["reference"][:, 0], "pose_source": batch["pose_source"],
          "fake_audio": out["fake_audio"], "target": batch["target"]}
