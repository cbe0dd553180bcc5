"""linebridge: reference-guided line-art colorization with a Brownian bridge diffusion model.

The pipeline, one package per stage: `core` (configuration, files, checkpoints, tracking,
the bookkeeping of a run) under everything; `data` (OpenMoji → prepared images, splits,
protocols) → `bbdm` (bridge, U-Net, losses, training, sampling) and `baselines` (Pix2Pix,
SCFT, ControlNet) → `inference` / `colorize` → `evaluation` (metrics, statistics, size and
power, evaluate) → `report`; `tuning` runs the Optuna study and `cli` wires the stages to
commands. Where the method and baselines differ from their papers and
reference code: docs/deviations.md.
"""

__version__ = "0.1.0"
