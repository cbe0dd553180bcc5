"""The method: the Brownian bridge, the dual-stream U-Net, its losses, training loop and sampler."""
