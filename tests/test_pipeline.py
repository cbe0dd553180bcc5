"""End to end: `dvc repro` of the whole study in a temporary git repo on the tiny profile.

Real git, real DVC, real MLflow store (resolved from DVC_ROOT), real OpenMoji images.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import yaml

from study_repo import make_study, sh, tool_env

pytestmark = pytest.mark.slow  # the whole `dvc repro` study, in minutes

REPO = Path(__file__).resolve().parents[1]
TINY_RUNS = {
    "A0-s0": "A0",
    "A0-s1": "A0",
    "A3-s0": "A3",
    "A3-s1": "A3",
    "A5-s0": "A5",
    "A5-s1": "A5",
    "A5-s2": "A5",  # four seeds of the method: its null control splits them two against two
    "A5-s3": "A5",
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root, env = tmp_path_factory.mktemp("pipeline"), tool_env()
    make_study(root, env, TINY_RUNS, power_seeds=[2], power_sims=10)  # fewer runs; the power stage in seconds
    sh(["linebridge", "data", "fetch"], root, env)
    assert "changed" not in sh(
        ["dvc", "status", "data.dvc"], root, env
    )  # fetch recreates data.dvc's bytes and caches them
    said = sh(["linebridge", "repro"], root, env)  # = make repro: dvc repro stage by stage, with progress
    assert re.search(r"\[1/\d+\] prepare — 0 min so far, about (\d+ h )?\d+ min to go", said), said[:2000]
    assert "the study is up to date after" in said
    return root, env


def test_report_has_every_row_and_column(study):
    from linebridge.report.tables import PROTOCOL_TITLES

    root, _ = study
    params = yaml.safe_load((root / "params.yaml").read_text())
    report = (root / "reports" / "ablation.md").read_text()
    plan = params["study"]  # TINY_RUNS' arms, the baselines, the trivial rows
    arms = [*dict.fromkeys(TINY_RUNS.values()), *plan["baselines"], *plan["trivial"]]
    for title in PROTOCOL_TITLES.values():
        table = report.split(f"### {title}")[1].split("###")[0]
        rows = {
            line.split("|")[1].strip(): line
            for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| arm")
        }
        assert set(arms) <= set(rows), set(arms) - set(rows)
        for arm in arms:
            assert "not run" not in rows[arm], rows[arm]
    for header in ("PSNR↑", "SSIM↑", "LPIPS↓", "Edge IoU↑", "ΔE00↓", "ΔE00 tone↓", "SWD↓", "FID↓", "KID↓"):
        assert header in report
    for section in (
        "## Pre-declared questions",
        "### Null control",
        "## Secondary metrics",
        "## Targets for the method",
        "## Convergence",
        "## Learning efficiency",
        "## Other line styles",
        "## Sampler choice",
        "## Attribution",
    ):
        assert section in report
    first = params["study"]["primary"][0]
    row = next(line for line in report.splitlines() if line.startswith(f"| {first['b']} − {first['a']} |"))
    assert "not run" not in row and "Holds:" in report
    power = report.split("### Size and power of the test at this design")[1].split("##")[0]
    assert "| 2 | behrens fisher |" in power  # the power stage simulated the first question at 2 seeds
    for fig in (
        "samples.png",
        "loss_curves.png",
        "metric_bars.png",
        "failures.png",
        "data_contact_sheet.png",
    ):
        assert (root / "reports" / "figures" / fig).stat().st_size > 1000


def test_metrics_and_mlflow_runs(study):
    root, env = study
    shown = sh(["dvc", "metrics", "show"], root, env)
    assert "metrics/train/A3-s1.json" in shown and "best_val_loss" in shown
    with sqlite3.connect(root / "mlflow.db") as db:
        names = {r[0] for r in db.execute("select name from runs")}
    assert {"train-A0-s0", "train-A3-s1", "train-A5-s1", "train-pix2pix"} <= names


def test_second_repro_is_a_noop(study):
    root, env = study
    out = sh(["dvc", "repro"], root, env)
    assert "didn't change, skipping" in out or "up to date" in out.lower()
    assert "Running stage" not in out
    assert "changed" not in sh(["dvc", "status"], root, env).replace("didn't change", "")


def test_notebook_runs_top_to_bottom(study, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    root, env = study
    nb = nbformat.read(REPO / "notebooks" / "explore_runs.ipynb", as_version=4)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("A3" in str(o.get("data", {}).get("text/plain", "")) for o in outputs)


def test_a_run_added_later_leaves_every_other_run_up_to_date(study):
    """No stage waits on all trainings: a new run in study.runs makes its own two stages and the report to do."""
    root, env = study
    params_file = root / "params.yaml"
    before = params_file.read_text()
    params = yaml.safe_load(before)
    params["study"]["runs"]["A0-s2"] = "A0"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    try:
        status = json.loads(sh(["dvc", "status", "--json"], root, env))
    finally:
        params_file.write_text(before)
    assert set(status) == {"train@A0-s2", "evaluate@A0-s2", "report"}, status
