"""The paper's ablations as configs over a base config (SynthTalk by default).

  pcavs-jax train --config configs/ablations.py:ablation=pose_dim_36 --workdir /tmp/abl_pd36 \
      --config.data_dir /tmp/synthtalk
  python scripts/sweep.py --config configs/ablations.py --args ablation=pose_dim_6 ablation=pose_dim_12 \
      ablation=pose_dim_36 ablation=no_contrastive --workdir-root /tmp/ablations

Ablations:
  pose_dim_6 / pose_dim_12 / pose_dim_36: size of the implicit pose code (12 in the paper);
  no_contrastive: the contrastive sync loss off (audio still pulled to the visual mouth by L1);
  no_feature_matching: feature matching (and the image L1 it contains) off;
  no_pose_augmentation: the pose source is the target itself, unaugmented;
  fixed_pose: the generator receives a zero pose code.
"""
import ml_collections

from configs import default

ABLATIONS = ("none", "pose_dim_6", "pose_dim_12", "pose_dim_36", "no_contrastive",
             "no_feature_matching", "no_pose_augmentation", "fixed_pose")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = default.parse_arg(arg, ablation="none", base="synthtalk", minutes=25.0)
  if args.base == "synthtalk":
    from configs import synthtalk
    # The sync stage trains by the contrastive loss alone: no_contrastive leaves it out.
    no_sync = ",sync_steps=0" if args.ablation == "no_contrastive" else ""
    config = synthtalk.get_config(f"minutes={args.minutes}{no_sync}")
  elif args.base == "default":
    config = default.get_config()
  else:
    raise ValueError(f"unknown base {args.base!r} (synthtalk, default)")
  name = args.ablation
  if name.startswith("pose_dim_"):
    config.model.pose_dim = int(name[len("pose_dim_"):])
  elif name == "no_contrastive":
    config.loss.contrastive = 0.0
  elif name == "no_feature_matching":
    config.loss.feature_matching = 0.0
  elif name == "no_pose_augmentation":
    config.data.augment_pose_source = False
  elif name == "fixed_pose":
    config.model.fixed_pose = True
  elif name != "none":
    raise ValueError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
  return config
