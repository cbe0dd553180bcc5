"""Write reports/ablation.md (and its figures) from the pipeline's committed results.

Every number here is read from a file a pipeline stage or side study wrote (metrics/train, metrics/eval,
metrics/curve, metrics/sweep, metrics/tune.json, metrics/objectives.json); nothing is computed from memory or typed
in. The study's facts (its arms, questions, the method and its targets) come from params.yaml `study`, each arm's
description from experiments/ARM.yaml. Missing inputs become "not run" lines with the reason, never numbers, with
one exception: the null control. It is the check that the contrast test does not find effects in training noise, so
when it fails or cannot run the report is still written, with a loud line, and `main` returns 1 so `dvc repro` stops.

BBDM arms are trained with several seeds; a run is named ARM-sSEED. Arms are summarised by the mean over their seeds
± the seed-to-seed standard deviation, and the pre-declared contrasts treat seeds (paired across arms) and drawing
groups as the units of inference (`stats.seed_group_contrast`), with Holm's correction over the primary contrasts.

Modules, each importing only those below it: `assemble` (the report and the command) → `contrasts`, `tables`,
`targets`, `training`, `side`, `figures`, `styles`, `failures` (one kind of section each; `failures` the separate
failure-cases page, reports/failures.md) → `fmt`, `read`, `study`.
"""

from linebridge.report.assemble import add_arguments, build_report, main
from linebridge.report.side import objectives_section

__all__ = ["add_arguments", "build_report", "main", "objectives_section"]
