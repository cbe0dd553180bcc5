"""The types, ranges and choices of every setting, checked before any work starts.

`problems(cfg)` validates a resolved configuration (params.yaml → profile → experiment →
--set) and returns one line per bad value, naming its dotted key: a typo'd `--set
model.model_channels=abc` stops with that key named instead of a traceback deep in torch.
The configuration itself is left as written (validation only, strict types: "8" is not 8).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
Norm = Literal["batch", "instance"]


def _power_of_two(value: int) -> int:
    if value & (value - 1):
        raise ValueError("must be a power of 2")
    return value


PowerOfTwo = Annotated[int, Field(ge=1), AfterValidator(_power_of_two)]


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ToneCounts(Section):
    val: NonNegInt
    test: NonNegInt


class Data(Section):
    dataset: Literal["openmoji", "folder", "pairs"]
    raw_dir: str
    prepared_dir: str
    limit_groups: NonNegInt
    image_size: Annotated[int, Field(ge=8)]
    split_fractions: Annotated[list[NonNegFloat], Field(min_length=3, max_length=3)]
    toned_groups: ToneCounts
    cross_refs: PosInt
    extractor: Literal["xdog", "find_edges"]
    folder_root: str
    pair_layout: Literal["separate", "side_by_side"]


class Jitter(Section):
    brightness: NonNegFloat
    contrast: NonNegFloat
    saturation: NonNegFloat
    hue: Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)]


class LineStyles(Section):
    share: Fraction
    families: list[Literal["width", "fill", "extract", "blur"]]


class Augment(Section):
    use_tps: bool
    tps_scale: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    reference_jitter: Jitter
    shared_jitter: Jitter
    reference_source: Literal["self", "same_tone"]
    line_styles: LineStyles


class Bridge(Section):
    num_timesteps: Annotated[int, Field(ge=2)]
    max_var: PosFloat
    objective: Literal["grad", "noise", "ysubx"]


class Model(Section):
    family: Literal["bbdm", "pix2pix", "scft"]
    reference: Literal["none", "cross_attention", "concat"]
    model_channels: PosInt
    channel_mult: Annotated[list[PosInt], Field(min_length=1)]
    num_res_blocks: PosInt
    attention_sizes: list[PosInt]
    dropout: Fraction
    context_dim: PosInt
    heads: PosInt
    dim_head: PosInt
    use_spatial_transformer: bool
    norm_groups: PosInt
    zero_init: bool
    scale_shift: bool
    reference_downsample: PowerOfTwo
    reference_positions: bool


class Loss(Section):
    lambda_edge: NonNegFloat
    edge_weight: NonNegFloat
    tone_weight: NonNegFloat
    edge_threshold: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]
    lambda_lpips: NonNegFloat


class Train(Section):
    batch_size: PosInt
    epochs: PosInt
    lr: PosFloat
    weight_decay: NonNegFloat
    betas: Annotated[list[Fraction], Field(min_length=2, max_length=2)]
    warmup_steps: NonNegInt
    decay_epochs: PosInt
    lr_min: NonNegFloat
    grad_clip: PosFloat
    ema_rate: Fraction
    ema_start: NonNegInt
    patience: PosInt
    min_delta: NonNegFloat
    val_timesteps: PosInt
    checkpoint_every: PosInt
    sample_every: PosInt
    max_train_images: NonNegInt
    max_val_images: NonNegInt
    keep_epochs: bool
    t_high_share: Fraction
    stop_at_convergence: bool
    convergence_gain: PosFloat
    min_epochs: PosInt


class Perf(Section):
    channels_last: bool
    fused_adamw: bool
    compile: bool


class Eval(Section):
    sample_step: Annotated[int, Field(ge=2)]
    eta: NonNegFloat
    deterministic: bool
    weights: Literal["ema", "raw"]
    max_per_group: NonNegInt
    sweep_steps: Annotated[list[Annotated[int, Field(ge=2)]], Field(min_length=1)]
    sweep_images: PosInt


class Tune(Section):
    space: dict[str, dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]]]
    trials: PosInt
    workers: PosInt
    confirm_workers: PosInt
    seed: NonNegInt
    n_startup_trials: NonNegInt
    epochs: PosInt
    max_train_images: NonNegInt
    pruner_startup_trials: NonNegInt
    pruner_first_epoch: NonNegInt
    confirm_seeds: Annotated[list[NonNegInt], Field(min_length=1)]
    max_failed: PosInt
    heartbeat_interval: PosInt
    storage: str
    best_params: str


class GanCommon(Section):
    epochs: PosInt
    ndf: PosInt
    n_layers_d: PosInt
    norm: Norm
    lambda_l1: NonNegFloat
    lambda_adv: NonNegFloat
    lr: PosFloat
    lr_d: PosFloat
    betas: Annotated[list[Fraction], Field(min_length=2, max_length=2)]


class Pix2Pix(GanCommon):
    ngf: PosInt
    dropout_layers: NonNegInt


class SCFT(GanCommon):
    base_channels: PosInt
    levels: PosInt
    res_blocks: NonNegInt
    lambda_perc: NonNegFloat
    lambda_style: NonNegFloat
    vgg_weights_dir: str


class ControlNet(Section):
    weights_dir: str
    prompt: str
    negative_prompt: str
    steps: PosInt
    guidance_scale: NonNegFloat
    resolution: Annotated[int, Field(ge=8, multiple_of=8)]  # Stable Diffusion works on 8× latents
    batch_size: PosInt


class Baselines(Section):
    pix2pix: Pix2Pix
    scft: SCFT
    controlnet: ControlNet


class Params(Section):
    seed: NonNegInt
    data: Data
    augment: Augment
    bridge: Bridge
    model: Model
    loss: Loss
    train: Train
    perf: Perf
    eval: Eval
    tune: Tune
    baselines: Baselines
    experiment: str
    arm: str
    profile: str
    description: str

    @model_validator(mode="after")
    def consistent(self) -> Params:
        """Settings valid alone but not together."""
        T = self.bridge.num_timesteps
        for key, steps in [("eval.sample_step", [self.eval.sample_step]), ("eval.sweep_steps", self.eval.sweep_steps)]:
            if any(s > T for s in steps):
                raise ValueError(f"{key}={steps if len(steps) > 1 else steps[0]}: at most bridge.num_timesteps={T}")
        down = 2 ** (len(self.model.channel_mult) - 1)
        if self.model.family == "bbdm" and self.data.image_size % down:
            raise ValueError(
                f"data.image_size={self.data.image_size} must divide by {down} (2^(len(model.channel_mult) - 1))"
            )
        size, ref_down = self.data.image_size, self.model.reference_downsample
        if self.model.family == "bbdm" and self.model.reference == "cross_attention":
            if size < ref_down:
                raise ValueError(f"data.image_size={size} is smaller than model.reference_downsample={ref_down}")
            if size % ref_down:
                raise ValueError(f"data.image_size={size} must divide by model.reference_downsample={ref_down}")
            if self.model.context_dim % 8:
                raise ValueError(
                    f"model.context_dim={self.model.context_dim}: the reference encoder needs a multiple of 8"
                )
        if self.model.family == "bbdm":
            levels = {size // 2**k for k in range(len(self.model.channel_mult))}
            if not set(self.model.attention_sizes) <= levels:
                raise ValueError(
                    f"model.attention_sizes={self.model.attention_sizes}: the network's feature maps are "
                    f"{sorted(levels, reverse=True)} px at data.image_size={size}"
                )
        for section, keys in self.tune.space.items():
            for key, (low, high) in keys.items():
                if not hasattr(getattr(self, section, None), key):
                    raise ValueError(f"tune.space.{section}.{key}: not a setting that a trial can change")
                if not low < high:
                    raise ValueError(f"tune.space.{section}.{key}=[{low}, {high}]: the low end must be below the high")
        return self


Spec = Annotated[str, Field(pattern=r"^\w+\.\w+$")]  # PROTOCOL.METRIC, as metrics/eval/RUN/PROTOCOL.json names it


class Contrast(Section):
    a: str
    b: str
    metric: Spec


class Primary(Contrast):
    """A primary question: its contrast and the equivalence margin (metric units) below which a difference is
    too small to matter."""

    margin: PosFloat


class Secondary(Section):
    contrasts: list[Contrast]
    metrics: list[Spec]


class Target(Section):
    """The method's seed mean on `metric` against `value`, or against `value` × the seed mean of arm `of`."""

    metric: Spec
    op: Literal["<", "<=", ">", ">="]
    value: Annotated[float, Field(allow_inf_nan=False)]
    of: str | None = None


class NullControl(Section):
    """The seed-split null: `arm`'s training seeds in two halves, compared on `metric` like two arms."""

    arm: str
    metric: Spec


class StyleChecks(Section):
    """The method on each unseen line style, against its own in-style values (seed means)."""

    below: str  # its tone ΔE00 below this run's (copy-reference: pasting the reference)
    max_tone_ratio: PosFloat  # tone ΔE00 at most this × in style
    min_slope: float  # skin-lightness slope at least this
    max_interior_ratio: PosFloat  # interior ΔE00 at most this × in style


class Study(Section):
    """params.yaml `study`: the runs `dvc repro` makes and the questions, controls and targets the report checks."""

    runs: Annotated[dict[str, str], Field(min_length=1)]
    baselines: list[str]
    trivial: list[str]
    primary: Annotated[list[Primary], Field(min_length=1)]
    secondary: Secondary
    verdict_reference: Literal["behrens_fisher", "min_df"]
    null_control: NullControl | None = None
    power_seeds: Annotated[list[Annotated[int, Field(ge=2)]], Field(min_length=1)]
    power_sims: PosInt
    alpha: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
    method: str
    reference_arm: str
    targets: list[Target]
    style_checks: StyleChecks

    @model_validator(mode="after")
    def known_arms(self) -> Study:
        """Runs are ARM-sSEED of their experiment; the method, the reference arm, the null control's arm and every
        arm a target compares with are runs of the study."""
        for run, arm in self.runs.items():
            if not re.fullmatch(rf"{re.escape(arm)}-s\d+", run):
                raise ValueError(f"study.runs.{run}: a run of {arm} is named {arm}-sSEED (e.g. {arm}-s0)")
        arms = list(dict.fromkeys(self.runs.values()))
        if self.method not in arms:
            raise ValueError(f"study.method={self.method}: not an arm of study.runs ({', '.join(arms)})")
        if self.null_control is not None and self.null_control.arm not in arms:
            raise ValueError(f"study.null_control.arm={self.null_control.arm}: not an arm of study.runs")
        names = [*arms, *self.baselines, *self.trivial]
        if self.reference_arm not in names:
            raise ValueError(f"study.reference_arm={self.reference_arm}: not a run of the study ({', '.join(names)})")
        for i, target in enumerate(self.targets):
            if target.of is not None and target.of not in names:
                raise ValueError(f"study.targets.{i}.of={target.of}: not a run of the study ({', '.join(names)})")
        return self


def problems(cfg: dict[str, Any], model: type[Section] = Params, prefix: str = "") -> list[str]:
    """One line per invalid setting, `key: message (got value)`; empty when the config is valid.

    `model` is the run configuration's by default; `problems(study, Study, "study.")` checks params.yaml's study.
    """
    try:
        model.model_validate(cfg)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(part) for part in e["loc"])
            key = prefix + loc
            if e["type"] == "extra_forbidden":
                lines.append(f"{key}: unknown key")
            elif loc:
                lines.append(f"{key}: {e['msg']} (got {e['input']!r})")
            else:
                lines.append(e["msg"].removeprefix("Value error, "))
        return lines
    return []
