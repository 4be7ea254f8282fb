"""The library entry points: one video (`generate`), a manifest of jobs (`generate_batch`), and the
data-set sources (`generate_synthtalk`, `generate_records`).

Each takes a checkpoint path (any form `pcavs_jax.checkpoint.load_checkpoint` reads) or a
`FrameDriver` to reuse. Official checkpoints were trained on faces cropped by the official loader,
so their inputs get `prepare.official_crop` unless `official` says otherwise.
"""
from __future__ import annotations

import pathlib

from pcavs_jax.data.media import InputError
from pcavs_jax.infer.batch import run_jobs
from pcavs_jax.infer.jobs import JobSpec, PathLike, PrepareOptions
from pcavs_jax.infer.manifests import read_manifest, results_path, shard_jobs
from pcavs_jax.infer.prepare import prepare_job
from pcavs_jax.infer.runner import FrameDriver, load_driver
from pcavs_jax.infer.writers import OutputPaths


def _driver(checkpoint: PathLike | FrameDriver, batch_size: int) -> FrameDriver:
  if isinstance(checkpoint, FrameDriver):
    return checkpoint
  return load_driver(checkpoint, batch_size)


def _driver_and_options(checkpoint: PathLike | FrameDriver, batch_size: int,
                        official: bool | None, **options) -> tuple[FrameDriver, PrepareOptions]:
  """The frame driver of a checkpoint and the input preparation that matches it.

  Official checkpoints get the official crop unless `official` says otherwise.
  """
  if official is None:
    from pcavs_jax.checkpoint import is_official_checkpoint
    official = not isinstance(checkpoint, FrameDriver) and is_official_checkpoint(checkpoint)
  driver = _driver(checkpoint, batch_size)
  return driver, PrepareOptions(resolution=driver.resolution, official_crop=official, **options)


def generate(checkpoint: PathLike | FrameDriver, reference: PathLike, audio: PathLike,
             out: PathLike, pose: PathLike | None = None, *, mouth_source: PathLike | None = None,
             panel: bool = False, frames_dir: PathLike | None = None, batch_size: int = 8,
             aligned: bool = False, official: bool | None = None,
             detector: str = "hog", max_frames: int | None = None,
             strict_pose_length: bool = False, progress: bool = True) -> dict:
  """One talking-face video: `reference` says who, `audio` what, `pose` how the head moves.

  Args:
    checkpoint: a checkpoint path, or a `FrameDriver` to reuse.
    reference: reference image, folder of images (averaged identity), or a video (first frame).
    audio: sound file or video; its audio is muxed into the output.
    out: the output .mp4; the panel goes to `<out stem>_panel.mp4`.
    pose: pose video (cut or looped to the audio), one image (fixed pose), a folder of frames,
      or None (the reference's own pose).
    mouth_source: the panel's last column (default: the audio's video, if it is one).
    panel: also write the side-by-side panel.
    frames_dir: also write the frames as PNGs here.
    batch_size: frames per device per network call.
    aligned: inputs are aligned face crops already (no detection).
    official: apply the official crop (default: when `checkpoint` is an official folder).
    detector: face detector, 'hog' (default) or 'cnn'.
    max_frames: cut the audio to this many frames.
    strict_pose_length: refuse a pose video shorter than the audio.
    progress: tqdm progress bar.

  Returns:
    The job's result record (status 'ok', output paths, frames, notes) with 'timings'.

  Raises:
    InputError: a bad input, naming it and the problem.
  """
  out = pathlib.Path(out)
  if out.suffix.lower() != ".mp4":
    raise InputError(out, "output must be an .mp4 file", "invalid")
  driver, options = _driver_and_options(checkpoint, batch_size, official, aligned=aligned,
                                        detector=detector, max_frames=max_frames,
                                        strict_pose_length=strict_pose_length, mouth=panel)
  spec = JobSpec(name=out.stem, reference=str(reference), audio=str(audio),
                 pose=str(pose) if pose else None,
                 mouth_source=str(mouth_source) if mouth_source else None)
  job = prepare_job(spec, options)
  paths = OutputPaths(out, out.with_name(out.stem + "_panel.mp4") if panel else None,
                      pathlib.Path(frames_dir) if frames_dir else None)
  summary = run_jobs([job], driver, out.parent, options, paths={job.name: paths}, panel=panel,
                     overwrite=True, progress=progress, raise_errors=True)
  return {**summary["results"][0], "timings": summary["timings"]}


def generate_batch(checkpoint: PathLike | FrameDriver, manifest: PathLike, out_dir: PathLike, *,
                   panel: bool = False, frames_dir: PathLike | None = None, batch_size: int = 8,
                   aligned: bool = False, official: bool | None = None,
                   detector: str = "hog", max_frames: int | None = None,
                   strict_pose_length: bool = False, overwrite: bool = False,
                   process_index: int | None = None, process_count: int | None = None,
                   progress: bool = True) -> dict:
  """Runs a manifest's jobs (this host's share); see `BatchRunner.run` for what comes back.

  Failures are recorded in `results_path(out_dir, ...)` with their reasons; finished outputs
  of earlier runs are skipped unless `overwrite`.

  Raises:
    InputError: the manifest itself is unusable.
  """
  import jax
  jobs = read_manifest(manifest)
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  driver, options = _driver_and_options(checkpoint, batch_size, official, aligned=aligned,
                                        detector=detector, max_frames=max_frames,
                                        strict_pose_length=strict_pose_length, mouth=panel)
  return run_jobs(shard_jobs(jobs, pi, pc), driver, out_dir, options, panel=panel,
                  frames_dir=frames_dir, results_path=results_path(out_dir, pi, pc),
                  overwrite=overwrite, progress=progress)


def generate_synthtalk(checkpoint: PathLike | FrameDriver, eval_set: PathLike,
                       out_dir: PathLike, *, batch_size: int = 8, **settings) -> dict:
  """One video per SynthTalk cross-driven triple of an `eval_set.npz`, named by triple id.

  `settings` go to `BatchRunner` (panel, frames_dir, overwrite, progress, ...); results are
  appended to `out_dir/results.jsonl`.
  """
  from pcavs_jax.data.synthtalk.eval_sets import load_eval_set
  from pcavs_jax.infer.datasets import eval_set_jobs
  driver = _driver(checkpoint, batch_size)
  jobs = list(eval_set_jobs(load_eval_set(eval_set), driver.resolution))
  return run_jobs(jobs, driver, out_dir, results_path=results_path(out_dir), **settings)


def generate_records(checkpoint: PathLike | FrameDriver, records_dir: PathLike,
                     out_dir: PathLike, *, split: str = "test", max_clips: int | None = None,
                     batch_size: int = 8, **settings) -> dict:
  """Self-driven reconstructions of a split's clip records, named by clip id.

  `settings` go to `BatchRunner`; results are appended to `out_dir/results.jsonl`.
  """
  from pcavs_jax.infer.datasets import record_jobs
  driver = _driver(checkpoint, batch_size)
  jobs = list(record_jobs(records_dir, split, driver.resolution, max_clips))
  return run_jobs(jobs, driver, out_dir, results_path=results_path(out_dir), **settings)
