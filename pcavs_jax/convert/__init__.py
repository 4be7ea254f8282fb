"""Official PyTorch checkpoints to Flax variables: a safe .pth reader and per-network key maps."""
