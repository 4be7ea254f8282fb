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

import jax
import jax.numpy as jnp
import optax
from jax import lax

from pcavs_jax.train import losses
from pcavs_jax.train.optimizers import STAGE_TRAINABLE
from pcavs_jax.train.stages import GNetworks
from pcavs_jax.train.state import GANTrainState, gradient_norms

Batch = dict[str, jax.Array]
AXIS = "batch"


def flatten_clip(batch: Batch) -> Batch:
  """[B, clip_len, ...] -> [B * clip_len, ...]; references repeated per target frame."""
  b, clip_len = batch["target"].shape[:2]
  flat = lambda x: x.reshape((b * clip_len,) + x.shape[2:])
  reference = jnp.repeat(batch["reference"], clip_len, axis=0)
  out = {"target": flat(batch["target"]), "pose_source": flat(batch["pose_source"]),
         "mel": flat(batch["mel"]), "reference": reference,
         "label": jnp.repeat(batch["label"], clip_len, axis=0)}
  if "truth" in batch:
    out["truth"] = {k: flat(v) for k, v in batch["truth"].items()}
  return out


# The ground truth each auxiliary truth loss regresses (`loss_config`), in code order.
TRUTH_KEYS = {"pose_truth": ("yaw", "pitch", "roll"), "mouth_truth": ("mouth_open", "mouth_width"),
              "pose_mouth_decorrelation": ("mouth_open", "mouth_width")}


def _truth_target(batch: Batch, keys: tuple[str, ...]) -> jax.Array:
  """(B, len(keys)) ground truth, each divided by half its full range (about unit scale)."""
  from pcavs_jax.data.synthtalk.analyzer import RANGES
  return jnp.stack([batch["truth"][k] / (RANGES[k] / 2) for k in keys], axis=-1)


def _gather(x: jax.Array) -> jax.Array:
  """Every device's rows of a per-device batch array, in device order (the global batch)."""
  return lax.all_gather(x, AXIS, tiled=True)


def _g_rngs(rng: jax.Array, noise_injection: bool = True) -> dict[str, jax.Array]:
  dropout, noise = jax.random.split(rng)
  return {"dropout": dropout, "noise": noise} if noise_injection else {"dropout": dropout}


_FAKE_KEYS = ("fake_visual", "fake_audio")


def _fakes(outputs) -> list[str]:
  """The fakes the forward drew ('visual', 'audio'), in the order they are concatenated."""
  return [k[len("fake_"):] for k in _FAKE_KEYS if k in outputs]


def _g_forward(g_params, batch_stats, batch: Batch, rng, *, model, stage: str,
               noise_injection: bool = True, visual_fake: bool = True):
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
                         train=True, visual_fake=visual_fake, **kw)
  keep = {k: out[k] for k in _FAKE_KEYS if k in out}
  keep.update(visual_mouth=out["visual"]["mouth"], audio_mouth=out["audio"]["mouth"],
              pose_code=out["visual"]["pose_code"], class_scores=out["identity"]["class_scores"])
  return keep, new["batch_stats"]


def _g_losses(outputs, d_out, batch: Batch, loss_config, vgg_params,
              mouth_read=None) -> tuple[jax.Array, dict]:
  """The generator-side losses of whichever outputs the stage produced; `mouth_read` is
  `_read_mouths` of them when the mouth-reader term is on."""
  w = loss_config
  terms: dict[str, jax.Array] = {}
  if "class_scores" in outputs and w.identity > 0:
    terms["identity_ce"] = w.identity * losses.cross_entropy_loss(outputs["class_scores"], batch["label"])
  if "audio_mouth" in outputs:
    # The contrastive negatives are the rest of the global batch, as the official loss sees
    # the whole (DataParallel-gathered) batch: gather every device's features first. Each device
    # then holds the global loss; the gather's transpose sums its cotangents over devices, so the
    # pmean-ed gradients equal the single-device gradients of the same global batch.
    _, parts = losses.sync_loss(_gather(outputs["visual_mouth"]),
                                _gather(outputs["audio_mouth"]),
                                contrastive_weight=w.contrastive, l1_weight=w.crossmodal_l1,
                                cosine_scale=w.get("sync_cosine_scale", 0.0))
    terms.update(parts)
  if "pose_code" in outputs and w.get("pose_truth", 0.0) > 0:
    terms["pose_truth"] = w.pose_truth * losses.truth_regression_loss(
        outputs["pose_code"], _truth_target(batch, TRUTH_KEYS["pose_truth"]))
  if "pose_code" in outputs and w.get("pose_mouth_decorrelation", 0.0) > 0:
    # Squared correlation over the global batch between each pose-code number and the true
    # mouth: the pose code, read from the target frame, must not carry its mouth to G.
    code = _gather(outputs["pose_code"])
    truth = _gather(_truth_target(batch, TRUTH_KEYS["pose_mouth_decorrelation"]))
    code, truth = code - code.mean(0), truth - truth.mean(0)
    std = lambda x: jnp.sqrt((x ** 2).mean(0))
    corr = (code.T @ truth / code.shape[0]) / (std(code)[:, None] * std(truth)[None] + 1e-6)
    terms["pose_mouth_decorrelation"] = w.pose_mouth_decorrelation * jnp.mean(corr ** 2)
  if "audio_mouth" in outputs and w.get("mouth_truth", 0.0) > 0:
    target = _truth_target(batch, TRUTH_KEYS["mouth_truth"])
    terms["mouth_truth"] = w.mouth_truth * sum(
        losses.truth_regression_loss(outputs[f"{side}_mouth"], target) for side in ("visual", "audio"))
  names = _fakes(outputs)
  if d_out is not None:
    *fake_ds, real = _split_scales(d_out, batch["target"].shape[0], len(names) + 1)
    for name, fake_d in zip(names, fake_ds):
      terms[f"gan_{name}"] = w.gan * losses.hinge_g_loss(fake_d)
      if w.feature_matching > 0:
        terms[f"feature_matching_{name}"] = losses.feature_matching_loss(
            fake_d, real, lambda_feat=w.feature_matching, lambda_image=w.image)
  for name in names:
    fake = outputs[f"fake_{name}"]
    if w.l1_image > 0:
      terms[f"l1_image_{name}"] = w.l1_image * losses.l1_loss(fake, batch["target"])
    if w.mouth_l1 > 0:
      terms[f"mouth_l1_{name}"] = w.mouth_l1 * losses.box_l1_loss(fake, batch["target"],
                                                                 w.mouth_box)
    if w.get("ssim_image", 0.0) > 0:
      terms[f"ssim_image_{name}"] = w.ssim_image * losses.ssim_loss(fake, batch["target"])
    if mouth_read is not None:
      terms[f"mouth_reader_{name}"] = w.mouth_reader * losses.l1_loss(
          mouth_read[name], lax.stop_gradient(mouth_read["target"]))
    if vgg_params is not None and w.vgg > 0:
      from pcavs_jax.models.vgg import perceptual_loss
      terms[f"vgg_{name}"] = w.vgg * perceptual_loss(vgg_params, fake, batch["target"])
  total = sum(terms.values())
  return total, terms


def uses_discriminator(loss_config) -> bool:
  """Whether the generator side reads D: with no GAN and no feature-matching weight, D neither
  runs nor trains (a recipe of pixel losses alone, as the memorisation check can use)."""
  return loss_config.gan > 0 or loss_config.feature_matching > 0


def _split_scales(d_out, b: int, parts: int):
  """D outputs on concat[fakes..., real] (b images each) -> `parts` per-scale output lists."""
  split = [[[x[i * b:(i + 1) * b] for x in scale] for scale in d_out] for i in range(parts)]
  split[-1] = jax.tree.map(lax.stop_gradient, split[-1])
  return split


def generator_side_forward(g_params, batch_stats, batch: Batch, rng: jax.Array, *, model,
                           stage: str, noise_injection: bool = True, visual_fake: bool = True):
  """The stage's generator-side forward under `jax.vjp`: (outputs, vjp_fn, new batch stats).

  `vjp_fn` pulls the gradient of any loss of the outputs back to `g_params`, so the forward runs
  once however many losses (and D updates) read its outputs.
  """
  forward = functools.partial(_g_forward, batch=batch, rng=rng, model=model, stage=stage,
                              noise_injection=noise_injection, visual_fake=visual_fake)
  return jax.vjp(lambda p: forward(p, batch_stats), g_params, has_aux=True)


def discriminator_loss_and_grads(d_params, d_stats, outputs, batch: Batch, *, discriminator,
                                 gan_weight: float, power_iteration: bool = True):
  """D's hinge loss on the detached fakes (visual and audio) and the reals, and its gradients.

  Args:
    d_params, d_stats: D's parameters and spectral-norm vectors.
    outputs: `generator_side_forward` outputs holding `fake_audio` (and `fake_visual`).
    batch: the flattened batch (its `target` frames are the reals).
    gan_weight: lambda_D.
    power_iteration: advance the spectral-norm vectors by one power iteration (training);
      False divides by the stored vectors' sigma (the official fixture's eval-mode D).

  Returns:
    (loss, {'d_fake', 'd_real'}, gradients, new d_stats).
  """
  real = batch["target"]
  fakes = lax.stop_gradient(jnp.concatenate([outputs[f"fake_{n}"] for n in _fakes(outputs)]))

  def loss_fn(params):
    variables = {"params": params, "batch_stats": d_stats}
    images = jnp.concatenate([fakes, real])
    if power_iteration:
      d_out, new = discriminator.apply(variables, images, train=True, mutable=["batch_stats"])
      new_stats = new["batch_stats"]
    else:
      d_out, new_stats = discriminator.apply(variables, images, train=False), d_stats
    n = fakes.shape[0]
    d_fake = losses.hinge_d_loss([[x[:n] for x in scale] for scale in d_out], real=False)
    d_real = losses.hinge_d_loss([[x[n:] for x in scale] for scale in d_out], real=True)
    return gan_weight * (d_fake + d_real), ({"d_fake": d_fake, "d_real": d_real}, new_stats)

  (loss, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
  return loss, terms, grads, new_stats


def uses_mouth_reader(loss_config) -> bool:
  """Whether the generator side reads its fakes' mouths with E_n (`loss.mouth_reader`)."""
  return loss_config.get("mouth_reader", 0.0) > 0


def _read_mouths(model, g_params, g_stats, outs, target) -> dict[str, jax.Array]:
  """E_n's eval-mode mouth features of the fakes and the target frames (not in the paper).

  E_n reads as a fixed judge, like D on the generator side: only the fakes carry gradient, so
  G is told to draw the mouth E_n reads from the target, and E_n cannot learn to be fooled.
  """
  b = target.shape[0]
  names = _fakes(outs) + ["target"]
  images = jnp.concatenate([outs[f"fake_{n}"] for n in names[:-1]] + [target])
  read = model.apply({"params": g_params, "batch_stats": g_stats}, images, train=False,
                     method=model.encode_nonidentity)["mouth"]
  return {n: read[i * b:(i + 1) * b] for i, n in enumerate(names)}


def generator_side_loss_and_grads(outputs, vjp_fn, batch: Batch, d_params, d_stats, *,
                                  discriminator, loss_config, vgg_params=None, model=None,
                                  g_params=None, g_stats=None):
  """The generator-side losses of the forward's outputs against D, and their G-side gradients.

  `model`, `g_params`, `g_stats` (the step's starting G side) are needed only for the
  mouth-reader term.

  Returns:
    (total loss, {term: weighted value}, gradients keyed like g_params).
  """
  def loss_fn(outs):
    d_out = None
    if _fakes(outs) and uses_discriminator(loss_config):
      images = jnp.concatenate([outs[f"fake_{n}"] for n in _fakes(outs)] + [batch["target"]])
      # D's spectral-norm vectors are not advanced by the generator side.
      d_out = discriminator.apply({"params": d_params, "batch_stats": d_stats}, images, train=False)
    mouth_read = None
    if _fakes(outs) and uses_mouth_reader(loss_config):
      mouth_read = _read_mouths(model, g_params, g_stats, outs, batch["target"])
    return _g_losses(outs, d_out, batch, loss_config, vgg_params, mouth_read)

  (loss, terms), out_grads = jax.value_and_grad(loss_fn, has_aux=True)(outputs)
  (grads,) = vjp_fn(out_grads)
  return loss, terms, grads


def train_step(state: GANTrainState, batch: Batch, *, model, discriminator, config,
               stage: str | None = None, vgg_params=None
               ) -> tuple[GANTrainState, dict[str, jax.Array]]:
  """One D update then one G-side update; returns the new state and pmean-ed scalar metrics.

  `stage` defaults to config.train.stage; the state's optimisers must be that stage's.
  """
  stage = stage or config.train.stage
  batch = flatten_clip(batch)
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), lax.axis_index(AXIS))
  g_rng, _ = jax.random.split(rng)
  outputs, g_vjp, g_stats = generator_side_forward(
      state.g_params, state.batch_stats["g"], batch, g_rng, model=model, stage=stage,
      noise_injection=config.train.get("noise_injection", True),
      visual_fake=config.loss.get("visual_fake", True))
  metrics: dict[str, jax.Array] = {}
  new_state, d_stats = state, state.batch_stats["d"]

  if _fakes(outputs) and uses_discriminator(config.loss):
    d_loss, d_terms, d_grads, d_stats = discriminator_loss_and_grads(
        state.d_params, d_stats, outputs, batch, discriminator=discriminator,
        gan_weight=config.loss.gan)
    d_grads = lax.pmean(d_grads, AXIS)
    new_state = new_state.apply_d_gradients(d_grads)
    metrics.update(d_terms, d_loss=d_loss)
    metrics.update(_prefixed("grad_norm_", gradient_norms({"discriminator": d_grads})))

  g_loss, g_terms, g_grads = generator_side_loss_and_grads(
      outputs, g_vjp, batch, new_state.d_params, d_stats, discriminator=discriminator,
      loss_config=config.loss, vgg_params=vgg_params, model=model, g_params=state.g_params,
      g_stats=state.batch_stats["g"])
  g_grads = lax.pmean(g_grads, AXIS)
  new_state = new_state.apply_g_gradients(g_grads)
  metrics.update(g_terms, g_loss=g_loss)
  trained = _trained_networks(stage)
  metrics.update(_prefixed("grad_norm_", {k: v for k, v in gradient_norms(g_grads).items()
                                          if k in trained}))
  metrics.update(param_norm_generator_side=optax.global_norm(new_state.g_params),
                 param_norm_discriminator=optax.global_norm(new_state.d_params))
  metrics = lax.pmean(metrics, AXIS)
  # Losses, gradient norms and the updated parameters' norms: a state is only saved when all
  # of them are finite.
  metrics["all_finite"] = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
  g_stats = _merge_stats(state.batch_stats["g"], g_stats)
  new_state = new_state.replace(step=state.step + 1, batch_stats={"g": g_stats, "d": d_stats}
                                ).update_ema(state.step)
  return new_state, metrics


def _prefixed(prefix: str, values: dict[str, jax.Array]) -> dict[str, jax.Array]:
  return {prefix + k: v for k, v in values.items()}


def _merge_stats(old, new):
  """Stages update only the BatchNorm statistics of the networks they run."""
  merged = dict(old)
  merged.update(new)
  return merged


def _trained_networks(stage: str) -> tuple[str, ...]:
  patterns = STAGE_TRAINABLE[stage]
  if patterns is None:
    return GNetworks
  return tuple(sorted({p[0] for p in patterns}))


def sample_step(g_params, batch_stats, batch: Batch, *, model) -> dict[str, jax.Array]:
  """Eval-mode reconstructions for image grids: audio-driven and visual-driven fakes."""
  batch = flatten_clip(batch)
  out = model.apply({"params": g_params, "batch_stats": batch_stats}, batch["reference"],
                    batch["mel"], batch["pose_source"], train=False)
  return {"reference": batch["reference"][:, 0], "pose_source": batch["pose_source"],
          "fake_audio": out["fake_audio"], "target": batch["target"]}
