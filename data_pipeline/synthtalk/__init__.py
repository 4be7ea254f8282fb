"""SynthTalk's offline writer: procedural talking-face clips with exact ground truth (DESIGN.md §5).

Modules:
  speech     phoneme sequences, the formant synthesiser, the mouth the phonemes imply
  generate   head motion, splits and the assembly of `Clip` records
  write      writing a SynthTalk folder: records and the evaluation sets with their baselines
  accuracy   how well the analyzer reads degraded frames

The face model that evaluation also reads (identity, renderer, analyzer, evaluation sets) lives in
`pcavs_jax.data.synthtalk`; the scores in `pcavs_jax.evaluate.scoring`.
"""
