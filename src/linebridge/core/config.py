"""Resolve one run's configuration: params.yaml → profile → experiments/ID.yaml → --set.

Every layer may only change keys that the base already has, so a typo in an
experiment file or an override is an error naming the file and key, not a
silently ignored setting.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from linebridge.core.schema import problems

Config = dict[str, Any]
# The study's method, released with it (EMA weights, safetensors) and its model card; `linebridge release` writes
# both, colorize and the demo fall back on the weights when no --checkpoint is given. Relative to the repo root.
RELEASED = Path("weights") / "linebridge.safetensors"
MODEL_CARD = Path("weights") / "MODEL_CARD.md"
RUN_NAME = re.compile(r"^(?P<arm>.+)-s(?P<seed>\d+)$")  # A3-s1: experiments/A3.yaml trained with seed 1


class UserError(ValueError):
    """Bad input from the user (a file, a key, a value); the message names it and the fix.

    The CLI prints these without a traceback; every other exception is a bug and keeps one.
    """


class ConfigError(UserError):
    """A configuration file or override is wrong; the message says where and how to fix it."""


def repo_root() -> Path:
    """The study's root: $DVC_ROOT when DVC runs a stage, else the nearest folder with params.yaml."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").exists():
            return folder
    return here


def read_yaml(path: Path) -> Config:
    """Read a YAML mapping, with an error that names the file when it is missing or malformed."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: Config, update: Config, origin: str, path: str = "") -> Config:
    """Deep-merge `update` into a copy of `base`; unknown keys raise ConfigError naming `origin`."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{path}{key}"
        if key not in out:
            known = ", ".join(sorted(map(str, out))) or "(none)"
            raise ConfigError(f"{origin}: unknown key '{dotted}'. Known keys here: {known}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge(out[key], value, origin, dotted + ".")
        elif isinstance(out[key], dict):
            raise ConfigError(f"{origin}: '{dotted}' is a section; give a mapping, not {value!r}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> Config:
    """Turn `train.lr=3e-4` into {'train': {'lr': 0.0003}} (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    nested: Config = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def load_config(
    experiment: str | None = None,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    root: Path | None = None,
) -> Config:
    """The resolved configuration of one run, with `experiment` and `profile` recorded in it."""
    root = Path(root) if root else repo_root()
    params = read_yaml(root / "params.yaml")
    profiles = params.pop("profiles", {}) or {}
    params.pop("study", None)
    profile = profile or params.pop("profile", None)
    params.pop("profile", None)
    description = ""
    cfg = params
    if profile and profile != "default":
        if profile not in profiles:
            raise ConfigError(
                f"{root / 'params.yaml'}: no profile '{profile}'. Profiles: default, {', '.join(profiles)}"
            )
        cfg = merge(cfg, profiles[profile], f"params.yaml profiles.{profile}")
    arm, seed = split_run_name(experiment, root)
    if arm:
        exp_path = root / "experiments" / f"{arm}.yaml"
        if not exp_path.exists():
            known = sorted(p.stem for p in (root / "experiments").glob("*.yaml"))
            raise ConfigError(f"{exp_path}: no such experiment. Known: {', '.join(known)}")
        exp = read_yaml(exp_path)
        description = str(exp.pop("description", ""))
        cfg = merge(cfg, exp, str(exp_path))
    if seed is not None:
        cfg["seed"] = seed
    for text in overrides:
        cfg = merge(cfg, parse_override(text), f"--set {text}")
    cfg["experiment"] = experiment or "base"
    cfg["arm"] = arm or "base"
    cfg["profile"] = profile or "default"
    cfg["description"] = description
    bad = problems(cfg)
    if bad:
        where = f"experiment {experiment}, " if experiment else ""
        raise ConfigError(
            f"invalid settings ({where}profile {cfg['profile']}; params.yaml, experiments/, --set):\n  "
            + "\n  ".join(bad)
        )
    return cfg


def split_run_name(name: str | None, root: Path) -> tuple[str | None, int | None]:
    """`A3-s1` → ("A3", 1): an arm trained with another seed; a name with its own experiment file is itself."""
    match = RUN_NAME.match(name or "")
    if match and not (root / "experiments" / f"{name}.yaml").exists():
        return match["arm"], int(match["seed"])
    return name, None


def run_name(arm: str, seed: int) -> str:
    """("A3", 1) → `A3-s1`, the inverse of split_run_name."""
    return f"{arm}-s{seed}"


def declared_method(root: Path | None = None) -> str:
    """The arm params.yaml `study.method` names: the method the study proposes (and `linebridge tune` tunes)."""
    return read_yaml((Path(root) if root else repo_root()) / "params.yaml")["study"]["method"]


def study_runs(study: Config) -> list[str]:
    """Every BBDM run the study trains, as ARM-sSEED, in the order of params.yaml `study.runs`."""
    return list(study["runs"])


def flatten(cfg: Config, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}: the form MLflow params and tables want."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def add_config_arguments(parser: argparse.ArgumentParser, experiment: bool = False, what: str = "") -> None:
    """The options every configured command shares: --profile and repeatable --set (and --experiment)."""
    if experiment:
        parser.add_argument(
            "--experiment",
            required=True,
            help=f"experiment id: A0..A5, pix2pix, scft (experiments/ID.yaml); ID-sN trains it with seed N{what}",
        )
    parser.add_argument(
        "--profile", default=None, help="params.yaml profile: the default CPU profile, 'paper' (GPU) or 'tiny' (tests)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. --set train.epochs=3 (repeatable)",
    )


# Tuned values apply only where their component is switched on: lambda_edge where the edge
# loss is on (A2-A4; A0/A1 keep 0, their "off" switch), tps_scale where references are warped.
TUNED_APPLIES: dict[str, Callable[[Config], bool]] = {
    "loss.lambda_edge": lambda cfg: cfg["loss"]["lambda_edge"] > 0,
    "augment.tps_scale": lambda cfg: bool(cfg["augment"]["use_tps"]),
}


def tuned_overrides(path: str | Path, cfg: Config | None = None) -> list[str]:
    """`--set` strings from the tuning study's best_params.yaml, e.g. ["loss.lambda_edge=1.31"].

    With `cfg` (the experiment's config without them), a value is kept only where its
    component is on (TUNED_APPLIES). A missing file (no study has run) gives [].
    """
    path = Path(path)
    if not path.exists():
        return []
    flat = flatten(read_yaml(path))
    return [
        f"{key}={value}" for key, value in flat.items() if cfg is None or TUNED_APPLIES.get(key, lambda _: True)(cfg)
    ]


def load_tuned_config(
    experiment: str, profile: str | None, overrides: list[str], tuned: str | Path | None
) -> tuple[Config, list[str]]:
    """`load_config` with the tuning study's values applied where they belong; --set still wins."""
    cfg = load_config(experiment, profile, overrides)
    if not tuned:
        return cfg, []
    applied = tuned_overrides(tuned, cfg)
    return load_config(experiment, profile, [*applied, *overrides]), applied
