"""A tiny-profile study as its own git + DVC repository, for the end-to-end tests (test_pipeline, test_fanout).

Real git, real DVC, real OpenMoji data; each command runs with the repository's own src/ ahead of the installed
package, as a fresh clone on another machine would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def tool_env() -> dict[str, str]:
    """The environment of a user's shell: the venv's tools first, no telemetry, a git identity, no MLflow server
    and no DVC_ROOT left over from the caller (each study its own mlflow.db)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    return env


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run `cmd` in a study repository with that repository's own code; its stdout, or a failure with both ends."""
    if (cwd / "src").is_dir():
        env = {**env, "PYTHONPATH": str(cwd / "src")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def make_study(root: Path, env: dict[str, str], runs: dict[str, str], **study: Any) -> None:
    """The study at the tiny profile with these runs (and `study` keys replaced; None removes one), committed."""
    for name in ("dvc.yaml", "data.dvc", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for folder in ("experiments", "tuned", "metrics/sweep", "metrics/line-styles"):  # records the report reads
        shutil.copytree(REPO / folder, root / folder)
    # `make tune`'s, `make objectives`' and benchmarks/convergence.py's committed results
    for name in ("tune.json", "objectives.json", "convergence.json"):
        shutil.copy(REPO / "metrics" / name, root / "metrics" / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    params["study"]["runs"] = runs
    for key, value in study.items():
        if value is None:
            params["study"].pop(key, None)
        else:
            params["study"][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    sh(["git", "init", "-q", "-b", "main"], root, env)
    sh(["dvc", "init", "-q"], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-qm", "study"], root, env)
