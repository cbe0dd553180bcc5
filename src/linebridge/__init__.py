"""linebridge: reference-guided line-art colorization with a Brownian bridge diffusion model.

The pipeline, one package per stage: `data` (OpenMoji → prepared images, splits,
references) → `bbdm` (bridge, U-Net, losses, training, sampling) and `baselines`
(Pix2Pix, SCFT, ControlNet) → `inference` / `colorize` → `evaluation` (metrics,
statistics, evaluate, report); `tuning` runs the Optuna study and `cli` wires the
stages to commands. Where the method and baselines differ from their papers and
reference code: docs/deviations.md.
"""

__version__ = "0.1.0"
