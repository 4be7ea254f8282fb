"""A TFDS builder over clip record folders (SynthTalk or preprocessed real video).

    builder = PcavsClips(records_dir="/data/synthtalk_records", data_dir="/data/tfds")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")   # or tfds.load via the builder's data_dir

Each record folder (see `pcavs_jax.data.records`) becomes one builder config, named after the
folder unless `config_name` is given; its splits (train, test, ...) become the TFDS splits. Frames
keep their JPEG bytes (no re-encoding). Features follow the folder's manifest: frame size, the
per-frame ground truth keys and per-identity parameters every clip has.

The training pipeline (`pcavs_jax.data.input_pipeline`) reads the record folders directly; this builder
is for `tfds` users (inspection, `tfds.as_numpy`, other codebases). The builder is not registered
in the TFDS catalogue, so `_info` builds `tfds.core.DatasetInfo` directly.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from pcavs_jax.data import records


def _config_name(records_dir: Path) -> str:
  name = re.sub(r"[^a-z0-9_]+", "_", records_dir.resolve().name.lower()).strip("_")
  return name or "records"


class PcavsClips(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Talking-face clips: JPEG frames, 16 kHz audio, mel, identity label, ground truth."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Clip records of pcavs-jax (records format 1)."}
  # No download checksums to find beside the code: the records are local. (TFDS' lookup of the
  # code path would also need `importlib_resources`, which the pinned environment lacks.)
  code_path = None

  def __init__(self, *, records_dir: str | Path, config_name: str | None = None, **kwargs):
    """Args:
      records_dir: a record folder with manifest.json.
      config_name: builder config name (default: the folder's name, sanitised).
      **kwargs: for `tfds.core.GeneratorBasedBuilder` (data_dir, ...).
    """
    self._records_dir = Path(records_dir)
    self._manifest = records.read_manifest(self._records_dir)
    if not self._manifest["splits"]:
      raise FileNotFoundError(f"{self._records_dir} has no manifest.json with splits")
    splits = [info for info in self._manifest["splits"].values() if info["clips"]]
    sizes = {tuple(s) for info in splits for s in info["frame_sizes"]}
    self._frame_size = sizes.pop() if len(sizes) == 1 else (None, None)
    self._truth = _common([info["truth"] for info in splits])
    self._params = _common([info.get("identity_params", {}) for info in splits])
    name = config_name or _config_name(self._records_dir)
    config = tfds.core.BuilderConfig(name=name, description=f"records at {self._records_dir}")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    height, width = self._frame_size
    truth, params = self._truth, self._params
    features = {
        "clip_id": f.Text(),
        "identity": f.Text(),
        "label": f.Scalar(dtype=np.int64),
        "source": f.Text(),
        "frames": f.Video(shape=(None, height, width, 3), encoding_format="jpeg"),
        "mel": f.Tensor(shape=(None, 80), dtype=np.float32),
        "audio": f.Tensor(shape=(None,), dtype=np.float32, encoding="zlib"),
    }
    if truth:
      features["truth"] = f.FeaturesDict({
          k: f.Tensor(shape=(None, *tail), dtype=np.float32) for k, tail in truth.items()})
    if params:
      features["identity_params"] = f.FeaturesDict({
          k: f.Tensor(shape=tuple(shape), dtype=np.float32) for k, shape in params.items()})
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=f.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(records_dir=str(self._records_dir)),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the records are local
    return {split: self._generate_examples(split) for split in self._manifest["splits"]}

  def _generate_examples(self, split: str):
    for raw in records.read_records(self._records_dir, split):
      ex = records.example_fields(raw)
      out = {k: ex[k] for k in ("clip_id", "identity", "label", "source", "frames", "mel",
                                "audio")}
      if self._truth:
        out["truth"] = {k: ex["truth"][k] for k in self._truth}
      if self._params:
        out["identity_params"] = {k: ex["identity_params"][k] for k in self._params}
      yield ex["clip_id"], out


def _common(specs: list[dict[str, list[int]]]) -> dict[str, list[int]]:
  """Keys present with one shape in every spec."""
  if not specs:
    return {}
  out = dict(specs[0])
  for spec in specs[1:]:
    out = {k: v for k, v in out.items() if spec.get(k) == v}
  return out
