"""linebridge: reference-guided line-art colorization with a Brownian bridge diffusion model.

The pipeline, one module per step: data/openmoji → augment → models → bridge →
losses → train → metrics → evaluate → report.  `cli` wires them to commands.
"""

__version__ = "0.1.0"
