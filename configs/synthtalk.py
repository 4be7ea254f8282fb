"""PC-AVS on SynthTalk at 64 px with narrow networks: learns on a 2-core CPU in minutes.

Build the data, then train:
  pcavs-jax synthtalk --out /tmp/synthtalk --identities 48 --clips-per-identity 4 --resolution 64 --seed 0
  pcavs-jax train --config configs/synthtalk.py --workdir /tmp/synthtalk_run \
      --config.data_dir /tmp/synthtalk/records
"""
import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = default.get_config()
  args = default.parse_arg(arg, minutes=25.0)
  m = config.model
  m.resolution = 64
  m.width = 0.125
  m.feature_dim = 128
  m.mouth_dim = 64
  m.num_classes = 64
  m.d_channels = 16
  config.data.batch_size = 8
  config.data.shuffle_buffer = 256
  config.data.reference_min_gap = 5
  config.num_train_steps = 100_000
  config.max_train_minutes = args.minutes
  config.log_every = 50
  config.image_every = 500
  config.checkpoint_every = 500
  config.train.decay_start_step = 100_000
  config.train.decay_end_step = 100_000
  return config
