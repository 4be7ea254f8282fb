"""Evaluation of generated talking faces, one module each:
  metrics.py       per-frame measures: SSIM and PSNR (the project's one definition of each), CPBD,
                   LMD, CSIM, head-pose error;
  videos.py        generated videos paired with their ground truth (files, folders, clip
                   records) and scored: `evaluate_paths` (`pcavs-jax evaluate`);
  scoring.py       SynthTalk's exact measures against the rendered truth, the baselines and their
                   stored scores, `evaluate_synthtalk` (`pcavs-jax evaluate --synthtalk`);
  mechanisms.py    what the encoders learned: sync retrieval and lag, pose-code R^2, identity
                   top-1, code probes;
  cross_driven.py  a checkpoint's cross-driven generation of the seen, unseen and self sets,
                   scored with the mechanisms; learning curves over kept checkpoints
                   (`pcavs-jax evaluate-synthtalk`);
  probe.py         `training_probe(config, model)`: the same measures logged during training;
  report.py        the reports as text tables.
"""
