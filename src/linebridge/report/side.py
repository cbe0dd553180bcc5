"""The side studies the report summarises: the sampler sweep and its choice, the Optuna study, the objectives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linebridge.core.config import load_config, study_runs
from linebridge.report.fmt import LABELS, bootstrapped, minutes, show, table
from linebridge.report.read import eval_file, read_choice, read_json

SWEEP_METRICS = ["psnr", "ssim", "delta_e", "delta_e_tone", "tint_rate"]
OBJECTIVE_METRICS = ["psnr", "ssim", "delta_e", "tint_rate", "delta_e_tone"]
PER_SEED = {"psnr", "delta_e_tone"}  # objectives: the metrics shown for each seed too


def sweep_cell(value: Any, metric: str) -> str:
    """A sweep value: a plain mean, or a bootstrapped {mean, low, high}; '—' when the row lacks the metric."""
    return bootstrapped(value, metric) if isinstance(value, dict) else show(value, metric)


def checkpoint_text(sweep: dict[str, Any]) -> str:
    """Which checkpoints the sweep scored: several (its rows are their means) or one."""
    paths = sweep.get("checkpoints") or [sweep.get("checkpoint")]
    if len(paths) == 1:
        return f"Checkpoint `{paths[0]}`"
    return f"Means over the checkpoints {', '.join(f'`{p}`' for p in paths)} (the arm's training seeds)"


def sweep_section(root: Path, study: dict[str, Any]) -> list[str]:
    """The validation sweep (steps × sampler × weights) and the setting chosen from it for the test evaluations."""
    s = read_json(root / "metrics" / "sweep" / "sweep.json")
    if s is None:
        return ["not run (no metrics/sweep/sweep.json)."]
    rows = []
    for r in s["rows"]:
        m, n = r["metrics"], r["n_images"]
        n = ", ".join(f"{k} {v}" for k, v in n.items()) if isinstance(n, dict) else n
        rows.append(
            [str(r["steps"]), r["sampler"], r.get("weights", "ema"), f"{r['seconds_per_image']:.3f}"]
            + [sweep_cell(m.get(k), k) for k in SWEEP_METRICS]
            + [str(n)]
        )
    header = ["steps", "sampler", "weights", "s / image", *(LABELS[m] for m in SWEEP_METRICS), "n"]
    return [
        *table(header, rows),
        "",
        f"{checkpoint_text(s)} on the {s.get('split', 'val')} split (tone ΔE00 on its cross_gt items, "
        "the rest on its self items); means over the items. 'eta=1' is BBDM's ancestral sampler; 'deterministic' is "
        "the DDIM-style ODE. Seconds are wall time on this machine, which varies with its load.",
        "",
        *choice_lines(root, study),
    ]


def choice_lines(root: Path, study: dict[str, Any]) -> list[str]:
    """The study's sampler (params.yaml `eval`), the sweep's last choice beside it, and whether every BBDM test
    evaluation used the study's sampler."""
    e = load_config(None, None, [], root=root)["eval"]
    lines = [
        f"**The study's sampler** (params.yaml `eval`): {e['sample_step']} steps, η = {e['eta']}, "
        f"deterministic = {e['deterministic']}, {e['weights']} weights. Every test evaluation uses it; it was chosen "
        "once on the validation split and written there, so a run added later needs no other run first."
    ]
    choice = read_choice(root)
    if choice is not None:
        c = choice["eval"]
        same = all(c[k] == e[k] for k in ("sample_step", "eta", "deterministic", "weights"))
        lines.append(
            f"The sweep above chose {c['sample_step']} steps, η = {c['eta']}, deterministic = {c['deterministic']}, "
            f"{c['weights']} weights (rule: {choice.get('rule', 'not recorded')}): "
            + ("the same." if same else "**not the study's sampler** — re-run the sweep or update params.yaml.")
        )
    other = [run for run in study_runs(study) if _sampler_differs(root, run, e)]
    if other:
        lines.append(
            f"**Not evaluated with it**: {', '.join(other)} (their metrics/eval JSON records another setting)."
        )
    return lines


def _sampler_differs(root: Path, run: str, chosen: dict[str, Any]) -> bool:
    res = read_json(eval_file(root, run, "self"))
    if res is None or not res.get("sampler"):
        return False
    sampler = res["sampler"]
    return (
        sampler.get("steps") != chosen["sample_step"]
        or bool(sampler.get("deterministic")) != bool(chosen["deterministic"])
        or res.get("weights") != chosen["weights"]
    )


def tune_section(root: Path) -> list[str]:
    """The Optuna study (`make tune`, not a stage): its judge, budget, best trial and whether it was adopted."""
    s = read_json(root / "metrics" / "tune.json")
    if s is None:
        return ["The Optuna study has not run (`make tune`)."]
    if "objective" not in s:
        return [
            "The committed `metrics/tune.json` comes from an earlier study whose judge was a validation loss that "
            "contains λ_edge itself; it carries no signal and its values are not used. Rerun with `make tune`."
        ]
    budget = s.get("trial_budget", {})
    images = budget.get("max_train_images") or "all"
    lines = [
        f"- judge: {s['objective']}; sampler {s.get('sampler')}",
        f"- trials (multi-fidelity): {budget.get('epochs', '?')} epochs on {images} training images each, the "
        "recipe's schedule squeezed into them; " + ", ".join(f"{k} {v}" for k, v in s["counts"].items()),
        f"- best trial {s['best_trial']}: objective {s['best_value']:.3f} at "
        + ", ".join(f"`{k}` = {v:.3g}" for k, v in s["best_params"].items()),
    ]
    e = load_config(None, None, [], root=root)["eval"]
    tuned = s.get("sampler")
    if isinstance(tuned, dict) and any(tuned[k] != e.get(k) for k in tuned):
        chosen = {k: e.get(k) for k in tuned}
        lines.append(
            f"- **tuned an earlier configuration**: its sampler is not this study's ({chosen}); commit "
            f"{s.get('commit', 'not recorded')}. `make tune` reruns it on the current one"
        )
    if s.get("importances"):
        shares = ", ".join(f"`{k}` {v:.2f}" for k, v in s["importances"].items())
        lines.append(f"- importances (fANOVA, seeded): {shares}")
    check = s.get("confirm")
    if check:
        per_seed = "; ".join(
            f"seed {seed}: default {d['objective']:.3f}, tuned {t['objective']:.3f}"
            for seed, d, t in zip(check["seeds"], check["default"], check["tuned"])
        )
        outcome = (
            "**adopted**: the study trains with the tuned values (`tuned/best_params.yaml`)."
            if check["adopted"]
            else "**not adopted**: the study keeps the defaults."
        )
        lines += [
            f"- confirmation at the full recipe ({per_seed}): {check['verdict']}",
            f"- rule: {check['rule']} → {outcome}",
        ]
    else:
        lines.append("- confirmation runs: not finished; the study keeps the defaults.")
    for fig in ("tune_history.png", "tune_importances.png"):
        if (root / "reports" / "figures" / fig).exists():
            lines += ["", f"![{fig}](figures/{fig})"]
    return lines


def objectives_section(root: Path) -> list[str]:
    """grad / noise / ysubx at equal budget (`make objectives`, not a stage): validation, mean and per seed."""
    s = read_json(root / "metrics" / "objectives.json")
    if s is None:
        return ["Not run (`make objectives`, ~20 minutes): no `metrics/objectives.json`."]
    seeds = sorted({r["seed"] for r in s["runs"]})
    items = ", ".join(f"{p} {n}" for p, n in s["validation_items"].items())
    sampler = s["sampler"]
    kind = "deterministic" if sampler["deterministic"] else f"η = {sampler['eta']:g}"
    commit = s["commit"] if s["commit"] == "unknown" else s["commit"][:7] + ("-dirty" if "dirty" in s["commit"] else "")

    def cell(m: dict[str, Any], key: str) -> str:
        """The seed mean, and for PER_SEED metrics each seed's value in brackets."""
        if key not in PER_SEED:
            return show(m[key], key)
        values = [
            score[key]
            for r in s["runs"]
            if r["objective"] == m["objective"]
            for score in r["scores"]
            if score["sample_step"] == m["sample_step"]
        ]
        return f"{show(m[key], key)} ({', '.join(show(v, key) for v in values)})"

    rows = [
        [
            m["objective"],
            str(m["sample_step"]),
            *(cell(m, k) for k in OBJECTIVE_METRICS),
            minutes(m["train_seconds"] / 60),
        ]
        for m in s["means"]
    ]
    header = ["objective", "sampler steps", *(LABELS[k] for k in OBJECTIVE_METRICS), "training min"]
    return [
        f"The full method ({s['experiment']}) trained once per objective and seed (seeds "
        f"{', '.join(map(str, seeds))}), everything else equal ({s['recipe']['epochs']} epochs of batch "
        f"{s['recipe']['batch_size']}); scored on validation ({items}), {kind}, {sampler['weights']} weights "
        f"(sampler from {s['sampler_from']}; the sweep chose it on grad checkpoints); commit {commit}, profile "
        f"{s['profile']}. Mean over the seeds, each seed in brackets; training minutes are the step loop's.",
        "",
        *table(header, rows),
        "",
        "Each objective gives its own estimate x̂ of the target (`BrownianBridge.predict_target`), and the L1 and "
        "edge losses are taken on what it predicts. An output error reaches x̂ one to one for grad and ysubx, and "
        "multiplied by √δ_t / (1 − m_t) for noise: ~45× at the first sampler step.",
    ]
