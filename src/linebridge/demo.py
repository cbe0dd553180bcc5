"""`linebridge demo`: colour a drawing in the browser with a trained checkpoint (Gradio, CPU).

Why: the report gives numbers over the test protocols; this page shows one drawing at a
time — your own upload or a fixed test item beside its ground truth — and the bridge's
path, the predicted clean image x̂0 at a few sampler steps on its way from the line art to
colour. It reuses `colorize`'s input handling (any size and mode) and `inference`'s
sampler, so what you see is what `linebridge colorize` writes.

Gradio is the optional `demo` extra (`pip install '.[demo]'`) and is imported inside the
functions that build the page, never at module level, so the study does not depend on it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

from linebridge.core.config import UserError, load_config, repo_root
from linebridge.gallery import default_choice, find_checkpoints, find_examples, no_checkpoint_note

if TYPE_CHECKING:
    import gradio as gr
    from torch import Tensor

PATH_FRAMES = 6  # x̂0 panels in the path strip (plus the line art)
PANEL_HEIGHT = 128  # px of each panel in the strip
MAX_STEPS = 200  # the paper profile's sampler steps (the study's: params.yaml eval.sample_step)
MAX_UPLOAD_PIXELS = 25_000_000  # width × height; below colorize's limit: the page may be served to others
STOCHASTIC, DETERMINISTIC = "stochastic (BBDM: η scales the noise)", "deterministic (DDIM-style ODE)"
CSS = """
#result img, #ground-truth img, #line-preview img, #ref-preview img { image-rendering: pixelated; object-fit: contain; }
"""


# ----------------------------------------------------------------------------- one colorization


@dataclass
class Outcome:
    image: Image.Image  # RGB, the line art's aspect, longer side at most 1024 px
    path: Image.Image | None  # the bridge's path strip; None for GAN baselines
    seconds: float  # loading + sampling
    summary: str  # Markdown for the status line


def _user_path(err: Exception, *paths: Path | None) -> str:
    """The error's message with upload folders cut to the file name (Gradio stores uploads in temp folders)."""
    text = str(err)
    for path in paths:
        if path is not None:
            text = text.replace(str(path), Path(path).name)
    return text


def read_upload(path: Path, mode: str) -> Image.Image:
    """An upload decoded as `linebridge colorize` does, at most MAX_OUTPUT_SIDE a side (so the result is too) and
    refused past MAX_UPLOAD_PIXELS before decoding; errors name the file, not Gradio's temp folder."""
    from linebridge.colorize import MAX_OUTPUT_SIDE, read_image

    try:
        hint = f"this page takes up to {MAX_UPLOAD_PIXELS / 1e6:g} megapixels (e.g. 5000×5000)"
        return read_image(Path(path), mode, MAX_OUTPUT_SIDE, MAX_UPLOAD_PIXELS, hint).image
    except UserError as err:
        raise UserError(_user_path(err, Path(path))) from None


def load_inputs(line_path: Path | None, ref_path: Path | None) -> tuple[Image.Image, Image.Image | None]:
    """Line art as 'L' and the reference as 'RGB' (or None)."""
    if line_path is None:
        raise UserError("no line art: upload an image or pick an example from the gallery")
    return read_upload(line_path, "L"), read_upload(ref_path, "RGB") if ref_path is not None else None


def path_strip(line: Image.Image, frames: list[tuple[int, Tensor]], total: int) -> Image.Image:
    """The line art, then x̂0 at the given sampler steps, each at the line art's aspect, labelled, side by side."""
    from linebridge.colorize import from_model, pad_square

    padded, box = pad_square(line)
    panels = [("line art", line.convert("RGB"))]
    panels += [(f"step {i + 1}/{total}", from_model(x.clamp(-1, 1), padded.size[0], box)) for i, x in frames]
    scale = PANEL_HEIGHT / line.size[1]
    width = max(1, round(line.size[0] * scale))
    font = ImageFont.load_default(size=12)
    label, gap = 16, 4
    strip = Image.new("RGB", (len(panels) * (width + gap) - gap, PANEL_HEIGHT + label), (235, 235, 235))
    draw = ImageDraw.Draw(strip)
    for k, (text, image) in enumerate(panels):  # labels below: Gradio's own label covers the image's top left
        resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
        strip.paste(image.resize((width, PANEL_HEIGHT), resample), (k * (width + gap), 0))
        draw.text((k * (width + gap) + 2, PANEL_HEIGHT + 1), text, fill=(40, 40, 40), font=font)
    return strip


def colorize_once(
    checkpoint_path: Path,
    line_path: Path | None,
    ref_path: Path | None,
    deterministic: bool | None = None,
    eta: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    on_step=None,
) -> Outcome:
    """Colour one uploaded line art; UserError (never a traceback) for bad files or settings.

    Sampler settings left None are the checkpoint's own (its eval.*). `on_step(done, total)`
    follows the sampler for a progress bar.
    """
    from linebridge.colorize import colorize_image, needs_reference
    from linebridge.core import checkpoint
    from linebridge.inference import Sampler, load_colorizer

    start = time.perf_counter()
    asked, seed = Sampler(None if steps is None else int(steps), deterministic, eta), int(seed)
    if asked.steps is not None and not 2 <= asked.steps <= MAX_STEPS:
        raise UserError(f"steps = {asked.steps}: choose 2 to {MAX_STEPS}")
    if eta is not None and not 0 <= eta <= 1:
        raise UserError(f"eta = {eta}: choose 0 (no noise) to 1 (BBDM's default)")
    line, ref = load_inputs(line_path, ref_path)
    frames: list[tuple[int, Tensor]] = []

    def keep(i: int, x_hat: Tensor) -> None:
        frames.append((i, x_hat.clone()))
        if on_step is not None:
            on_step(i + 1, used.steps)

    name = Path(checkpoint_path).name
    try:
        fn, cfg = load_colorizer(Path(checkpoint_path), asked, callback=keep)
    except UserError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError) as err:  # a state dict that does not fit its config
        raise checkpoint.CheckpointError(
            f"{checkpoint_path}: not a usable linebridge checkpoint ({type(err).__name__}: {str(err)[:300]})"
        ) from None
    if needs_reference(cfg) and ref is None:
        raise UserError(f"{name}: this model colours from a reference; upload one or pick an example")
    used = asked.over(Sampler.of_checkpoint(cfg))  # the settings load_colorizer bound
    loaded = time.perf_counter()
    image = colorize_image(fn, cfg["data"]["image_size"], line, ref, seed)
    seconds = time.perf_counter() - start
    took = f"**{seconds:.2f} s** ({loaded - start:.2f} s loading, {seconds - (loaded - start):.2f} s colouring)"
    model = f"{cfg['experiment']} ({cfg.get('description') or cfg['model']['family']}; {cfg['profile']} profile)"
    if cfg["model"]["family"] != "bbdm":
        return Outcome(
            image,
            None,
            seconds,
            f"Colorized {line.size[0]}×{line.size[1]} in {took}; {model}. "
            "A GAN baseline colours in one forward pass: it has no bridge path, and the sampler, steps "
            "and seed do not apply.",
        )
    total = len(frames)
    picks = sorted({round(k * (total - 1) / (PATH_FRAMES - 1)) for k in range(PATH_FRAMES)})
    strip = path_strip(line, [frames[k] for k in picks], total)
    sampler = "deterministic" if used.deterministic else f"η = {used.eta:g}"
    return Outcome(
        image,
        strip,
        seconds,
        f"Colorized {line.size[0]}×{line.size[1]} in {took}; {total} steps, {sampler}, seed {seed}; {model}.",
    )


# ----------------------------------------------------------------------------- the page


def _gradio():
    """Gradio, imported on first use (an optional extra), with its usage analytics off: the machine may be offline."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UserError("the demo needs Gradio, an optional extra: pip install -e '.[demo]' (or `make demo`)") from None
    return gradio


def build_app(root: Path, extra: Path | None = None) -> tuple[gr.Blocks, list[str]]:
    """The Gradio page and the folders it may serve files from (the prepared test data)."""
    gr = _gradio()
    for name in ("linebridge.data.datasets", "linebridge.inference", "linebridge.bbdm.sampling", "linebridge.colorize"):
        importlib.import_module(name)  # torch, torchvision, the models: seconds now, not in the first request's time

    models = find_checkpoints(root, extra)
    cfg = load_config(root=root)
    ec = cfg["eval"]  # the sliders start at the study's sampler
    prepared = Path(cfg["data"]["prepared_dir"])
    prepared = prepared if prepared.is_absolute() else root / prepared
    examples = find_examples(prepared)

    def run(
        model: str | None,
        line_file: str | None,
        ref_file: str | None,
        sampler: str,
        eta: float,
        steps: float,
        seed: float | None,
        progress=gr.Progress(),  # noqa: B008 (Gradio injects its progress bar through this default)
    ) -> tuple[Any, Any, str]:
        if not model or model not in models:
            return None, None, "**Error:** choose a model first."
        progress(0, desc="loading the model")
        try:
            out = colorize_once(
                models[model],
                line_file and Path(line_file),
                ref_file and Path(ref_file),
                sampler == DETERMINISTIC,
                float(eta),
                int(steps),
                int(seed or 0),
                on_step=lambda done, total: progress((done, total), desc="sampling", unit="steps"),
            )
        except UserError as err:
            return None, None, f"**Error:** {err}"
        return out.image, out.path, out.summary

    def preview(file: str | None, mode: str) -> tuple[Any, str]:
        if file is None:
            return None, ""
        try:
            return read_upload(Path(file), mode), ""
        except UserError as err:
            return None, f"**Error:** {err}"

    def pick(evt: gr.SelectData) -> tuple[str, str, str, str]:
        item = examples[evt.index]
        return (
            str(item.line),
            str(item.ref),
            str(item.gt),
            f"Example **{item.caption}**: ground truth shown on the right.",
        )

    pick.__annotations__["evt"] = gr.SelectData  # Gradio finds the event argument by this (a string here otherwise)

    with gr.Blocks(title="linebridge demo") as app:
        gr.Markdown(
            "# linebridge: reference-guided line-art colorization\n"
            "Upload a line art (dark lines on light, any size) and a colour reference, or pick a fixed test "
            "item below; the output keeps the line art's aspect (at most 1024 px a side). The strip shows the "
            "bridge's path: the predicted "
            "clean image x̂0 at a few sampler steps, from the line art to colour."
        )
        if not models:
            gr.Markdown(no_checkpoint_note(root), elem_id="no-checkpoint")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    line_file = gr.File(label="line art", file_types=["image"], type="filepath", elem_id="line-file")
                    ref_file = gr.File(
                        label="colour reference", file_types=["image"], type="filepath", elem_id="ref-file"
                    )
                with gr.Row():
                    with gr.Column(min_width=120):
                        line_view = gr.Image(label="line art", interactive=False, height=160, elem_id="line-preview")
                        line_note = gr.Markdown("", elem_id="line-note")
                    with gr.Column(min_width=120):
                        ref_view = gr.Image(label="reference", interactive=False, height=160, elem_id="ref-preview")
                        ref_note = gr.Markdown("", elem_id="ref-note")
                    gt_view = gr.Image(
                        label="ground truth (examples only)",
                        interactive=False,
                        height=160,
                        elem_id="ground-truth",
                        min_width=120,
                    )
            with gr.Column(scale=2):
                model = gr.Dropdown(
                    list(models),
                    value=default_choice(models, extra),
                    label="model",
                    info="checkpoints under outputs/train/*/ and --checkpoint",
                )
                with gr.Row():
                    sampler = gr.Radio(
                        [STOCHASTIC, DETERMINISTIC],
                        value=DETERMINISTIC if ec["deterministic"] else STOCHASTIC,
                        label="sampler",
                        scale=3,
                    )
                    eta = gr.Slider(0, 1, value=ec["eta"], step=0.05, label="η (stochastic only)", scale=2)
                with gr.Row():
                    steps = gr.Slider(
                        2,
                        MAX_STEPS,
                        value=ec["sample_step"],
                        step=1,
                        label=f"steps (the study samples with {ec['sample_step']})",
                        scale=3,
                    )
                    seed = gr.Number(0, precision=0, minimum=0, label="seed", scale=2)
                button = gr.Button("Colorize", variant="primary", interactive=bool(models), elem_id="colorize")
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            result = gr.Image(
                label="result (the line art's aspect, ≤ 1024 px)",
                type="pil",
                format="png",
                interactive=False,
                height=200,
                elem_id="result",
                scale=1,
                min_width=160,
            )
            path = gr.Image(
                label="bridge path: x̂0 from line art to colour",
                type="pil",
                format="png",
                interactive=False,
                elem_id="path",
                scale=4,
            )
        if examples:
            gallery = gr.Gallery(
                [(str(e.line), e.caption) for e in examples],
                label="examples: fixed test items (protocols self and cross_gt); click one",
                columns=8,
                height=None,
                allow_preview=False,
                elem_id="gallery",
            )
            gallery.select(pick, None, [line_file, ref_file, gt_view, status])
        else:
            gr.Markdown(
                f"No example gallery: no prepared test protocols under `{prepared}` "
                "(`dvc repro prepare` writes them). Upload your own line art and reference.",
                elem_id="no-gallery",
            )
        line_file.change(lambda f: preview(f, "L"), line_file, [line_view, line_note])
        ref_file.change(lambda f: preview(f, "RGB"), ref_file, [ref_view, ref_note])
        line_file.upload(lambda: None, None, gt_view)  # your own drawing has no ground truth
        button.click(run, [model, line_file, ref_file, sampler, eta, steps, seed], [result, path, status])
    return app, [str(prepared)] if examples else []


def launch(app: gr.Blocks, allowed: list[str], host: str, port: int | None, block: bool = True) -> None:
    """Serve the page; with block=False return once it is up (tests; `app.close()` stops it)."""
    gr = _gradio()

    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app.queue(default_concurrency_limit=1).launch(
        server_name=host,
        server_port=port,
        allowed_paths=allowed,
        theme=theme,
        css=CSS,
        ssr_mode=False,
        prevent_thread_lock=not block,
        quiet=not block,
        show_error=True,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a checkpoint to offer first, besides those found under outputs/train/*/",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (0.0.0.0 makes the page reachable from other machines)"
    )
    parser.add_argument("--port", type=int, default=None, help="port; unset: 7860, or the next free one above it")


def main(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UserError(f"{args.checkpoint}: no such checkpoint file")
    root = repo_root()
    app, allowed = build_app(root, args.checkpoint)
    launch(app, allowed, args.host, args.port)
    return 0
