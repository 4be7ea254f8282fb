"""The sync stage alone: E_a and E_n's trunk and mouth mapper by the contrastive sync loss
('sync_trunk'), scored by audio-to-visual mouth retrieval among 8 candidates on held-out clips.

  pcavs-jax synthtalk --out /tmp/synthtalk --identities 60 --clips-per-identity 4 --resolution 64 --seed 0
  pcavs-jax train --config configs/synthtalk_sync.py --workdir /tmp/sync_run \
      --config.data_dir /tmp/synthtalk

The retrieval top-1 and lag of the seen and unseen sets are logged every eval_every steps
(<workdir>/mechanisms.jsonl, TensorBoard eval/<set>/sync_top1).

Measured on the 60-identity set, alone on 2 CPU cores (`:minutes=14`, 14.5 min wall with
start-up): step 6066, top-1 0.502 unseen / 0.513 seen (best 0.512 / 0.537 at step 5000; chance
0.125; the perfect mouth reader's ceiling 0.90, as a frame shows only its mouth shape and 10-15 %
of negatives show the same one), still rising by about 0.05 per 1000 steps; lag 0 from step 500.
`:minutes=29`: step 11179, 0.571 / 0.588 (best 0.595 / 0.593 at step 10500). Resumed to 60
minutes in all (step 23901), top-1 stays at 0.53-0.60 unseen / 0.48-0.58 seen from step 10000 on
while the training contrastive loss keeps falling (108 to 76): the encoders fit the training
clips of 48 identities without telling held-out mouths apart better, so more time on this set
does not reach 0.80. What caps it is the features' precision: at step 23901 a linear read-out
recovers the true mouth openness / width from the visual feature at held-out R^2 0.95 / 0.82 and
from the audio feature at 0.98 / 0.98, and mouth readers of exactly that precision
(`mechanisms.reader_top1`) score 0.62 (the features: 0.57); 0.80 needs R^2 0.995 on both sides
(`scripts/probe_codes.py --checkpoint RUN --eval-set DATA/cross_driven/eval_set.npz`).
On the README's 625-identity set (500 training identities, `:minutes=14`,
`--config.model.num_classes=640`): step 5501, 0.428 / 0.453, no higher at equal steps (0.46
against 0.51 at step 5000) while its training loss falls more slowly (178 against 142).
"""
import ml_collections

from configs import default, synthtalk


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = default.parse_arg(arg, minutes=13.0, batch=16)
  config = synthtalk.get_config(f"minutes={args.minutes},identity_steps=0,sync_steps=0")
  config.train.schedule = "sync_trunk"
  config.data.batch_size = args.batch
  config.image_every = 0
  config.checkpoint_every = 2000
  config.eval_every = 500
  config.eval_triples = 0      # no generation: G does not train in this stage
  # The pose-source augmentation (perspective warp, hue turn) stays on, although G does not run:
  # without it top-1 rises faster (unseen / seen 0.450 / 0.398 at step 1500, against 0.382 /
  # 0.348), then stalls near 0.40 (0.388 / 0.365 at step 5500, 14 minutes; likely E_n tells
  # training clips apart by more than the mouth). 5-minute runs with it, no better at step 1500:
  # cosine scale 30 (0.325 / 0.353); batch 32 (half the steps, no better per step); lr 5e-3 or
  # Adam beta1 0.9 collapse E_n's mouth features (top-1 0); same-face negatives (`:batch=4` with
  # data.clip_len=4, clip_stride=5: 16 frames a batch, 4 of each clip) 0.312 / 0.286.
  return config
