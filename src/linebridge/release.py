"""`linebridge release`: the study's method as weights anyone can use without training (`linebridge verify`
re-scores them).

release  the EMA weights of the method's first run (`study.method` with seed 0: fixed before the study, not picked
         by its score) from outputs/train/RUN/best.pt → weights/linebridge.safetensors (no pickle: tensors, with the
         run's config, its name and the commit as metadata), and weights/MODEL_CARD.md: data, recipe, commit, the
         run's test numbers, limits and the data's licence. A DVC stage runs it after that run's evaluation.

`linebridge colorize` and the demo use the released weights when no checkpoint is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from linebridge.core.config import MODEL_CARD, RELEASED, UserError, read_yaml, repo_root
from linebridge.core.io import write_atomic

DATA_LICENCE = "OpenMoji (openmoji.org), CC BY-SA 4.0: credit OpenMoji and share derived works alike"


def released_run(root: Path) -> str:
    """The run whose weights are released: the method's seed 0, which must be a run of the study."""
    study = read_yaml(root / "params.yaml")["study"]
    run = f"{study['method']}-s0"
    if run not in study["runs"]:
        raise UserError(f"params.yaml study.runs has no {run}: the released weights are the method's seed 0")
    return run


def commit(root: Path) -> str:
    from linebridge.core.tracking import git_commit

    return git_commit(root, short=True)


def release(root: Path) -> Path:
    """Write the weights and the model card of `released_run`; returns the weights' path."""
    from linebridge.core import checkpoint

    run = released_run(root)
    state = checkpoint.load(root / "outputs" / "train" / run / "best.pt")
    facts = {"run": run, "epoch": str(state["epoch"]), "commit": commit(root)}
    out = root / RELEASED
    checkpoint.save_release(out, state["ema"], state["config"], facts)
    write_atomic(root / MODEL_CARD, model_card(root, run, state["config"], facts))
    return out


def headline(root: Path, run: str) -> dict[str, dict[str, float]]:
    """protocol → metric → mean, as the study's evaluation of `run` wrote them (missing protocols left out)."""
    found = {}
    for protocol in json_protocols(root / "metrics" / "eval" / run):
        metrics = json.loads((root / "metrics" / "eval" / run / f"{protocol}.json").read_text())["metrics"]
        found[protocol] = {k: v["mean"] for k, v in metrics.items() if isinstance(v, dict) and "mean" in v}
    return found


def json_protocols(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.json") if not p.stem.endswith(".timing"))


def model_card(root: Path, run: str, cfg: dict[str, Any], facts: dict[str, str]) -> str:
    """The model card (Markdown), every number read from the run's committed files."""
    numbers = headline(root, run)
    summary = json.loads((root / "metrics" / "train" / f"{run}.json").read_text())
    m, t, e = cfg["model"], cfg["train"], cfg["eval"]
    rows = [
        f"| {protocol} | {name} | {value:.4g} |"
        for protocol in sorted(numbers)
        for name, value in sorted(numbers[protocol].items())
        if name in {"psnr", "ssim", "delta_e", "delta_e_tone", "tint_rate", "delta_e_interior"}
    ]
    return "\n".join(
        [
            f"# linebridge — {cfg['arm']} ({run}), released weights",
            "",
            f"`{RELEASED}`: the EMA weights of run {run} ({cfg.get('description', cfg['arm'])}), safetensors, "
            f"with its configuration, run name and commit as metadata. Written by `linebridge release` at commit "
            f"{facts['commit']} from `outputs/train/{run}/best.pt` (epoch {facts['epoch']}).",
            "",
            "## Use",
            "",
            "```bash",
            "linebridge colorize my_drawing.png --ref a_colour_picture.png -o coloured.png   # these weights",
            "linebridge demo                                                               # in the browser",
            "make verify                                   # re-score them on the test protocols",
            "```",
            "",
            "## Model",
            "",
            f"A Brownian-bridge diffusion U-Net at {cfg['data']['image_size']}² pixels: line art by channel "
            f"concatenation, the colour reference by cross-attention ({m['heads']} heads × {m['dim_head']}) on the "
            f"tokens of a small CNN encoder; {m['model_channels']} channels × {m['channel_mult']}. Sampled with "
            f"{e['sample_step']} {'deterministic' if e['deterministic'] else 'stochastic'} steps.",
            "",
            "## Training",
            "",
            f"Data: the prepared OpenMoji training split (`linebridge prepare`, seed {cfg['seed']}). References during "
            f"training: {cfg['augment']['reference_source']} (TPS-warped, colour-jittered). Recipe: AdamW, batch "
            f"{t['batch_size']}, lr {t['lr']:g} with a cosine over {t['decay_epochs']} epochs to {t['lr_min']:g}, EMA "
            f"{t['ema_rate']}; stopped after {summary['epochs_run']} epochs ({summary['steps']} steps, "
            f"{'converged by the rule' if summary.get('converged') else 'at its cap, not converged'}), "
            f"{summary['wall_time_s'] / 60:.1f} minutes of training loop on a 2-core CPU.",
            "",
            "## Test numbers (this run; the study's report gives the seed means and intervals)",
            "",
            "| protocol | metric | value |",
            "|---|---|---|",
            *rows,
            "",
            "## Limits",
            "",
            f"- Trained on emoji at {cfg['data']['image_size']}²: a drawing is coloured at that size and resized "
            "back, so outputs are smooth, not detailed.",
            "- One line style in training unless `augment.line_styles` was on; the report's unseen-style tables "
            "say what other styles cost.",
            "- Skin tone comes from the reference; other colours are the model's guess where the reference does "
            "not show them.",
            "",
            "## Licence",
            "",
            f"Training data: {DATA_LICENCE}. The code: see the repository's licence.",
            "",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options: the run is params.yaml's study.method with seed 0


def main(args: argparse.Namespace) -> int:
    root = repo_root()
    print(f"wrote {release(root)} and {root / MODEL_CARD}")
    return 0
