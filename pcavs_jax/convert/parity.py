"""Compares converted networks with the official outputs of `shared/parity/official_outputs.npz`.

Used by the parity tests and by `scripts/parity_report.py`, which prints the figures.
"""
from __future__ import annotations

import numpy as np


def nhwc(x: np.ndarray) -> np.ndarray:
  """NCHW (PyTorch) -> NHWC."""
  return np.transpose(x, (0, 2, 3, 1))


def max_abs_error(ours, official) -> float:
  return float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(official, np.float64))))


def official_parity_errors(model, variables, outputs: dict, discriminator=None,
                           d_variables=None) -> dict[str, float]:
  """Max abs error of every official output the given networks reproduce.

  Args:
    model: a `PCAVS` in the official configuration; variables: its converted variables.
    outputs: the arrays of official_outputs.npz (inputs `in_*` and the official outputs).
    discriminator, d_variables: the converted D, to compare its logits and layer statistics.

  Returns:
    {official output name: max abs error}; D layers as 'D_scale{s}_layer{j}_mean_abs'.
  """
  o = outputs
  ref, drv, mel = nhwc(o["in_reference"]), nhwc(o["in_driving"]), o["in_spectrogram"][:, 0]
  identity = model.apply(variables, ref, method=model.encode_identity)
  visual = model.apply(variables, ref, method=model.encode_nonidentity)
  audio = model.apply(variables, mel, method=model.encode_audio)
  style = np.concatenate([o["V_id_vector"], o["E_mouth_embed"], o["E_pose_code"]], axis=1)
  image = model.apply(variables, style, nhwc(o["V_id_map"]), method=model.generate)
  infer = model.apply(variables, ref, mel, drv, with_reference_pose=True, method=model.infer)
  ours = {
      "V_id_vector": identity["id_vector"], "V_id_map": identity["id_map"],
      "V_class_scores": identity["class_scores"], "E_feature": visual["feature"],
      "E_mouth": visual["mouth"], "E_headpose": visual["headpose"],
      "E_mouth_embed": visual["mouth_embed"], "E_pose_code": visual["pose_code"],
      "A_sync_feature": audio["mouth"], "A_sync_mouth_embed": audio["mouth_embed"],
      "G_image_from_video_features": image,
      "inference_driven_pose": infer["driven"], "inference_reference_pose": infer["reference_pose"],
  }
  errors = {k: max_abs_error(v, nhwc(o[k]) if o[k].ndim == 4 else o[k]) for k, v in ours.items()}
  if discriminator is not None:
    scales = discriminator.apply(d_variables, nhwc(o["inference_driven_pose"][:1]))
    for s, scale in enumerate(scales):
      errors[f"D_scale{s}_logits"] = max_abs_error(scale[-1], nhwc(o[f"D_scale{s}_logits"]))
      for j, feature in enumerate(scale[1:]):
        mean_abs = np.abs(np.asarray(feature)).mean(axis=(0, 1, 2))
        errors[f"D_scale{s}_layer{j}_mean_abs"] = max_abs_error(
            mean_abs, o[f"D_scale{s}_layer{j}_mean_abs"])
  return errors
