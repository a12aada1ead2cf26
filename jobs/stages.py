"""The one list of deparrot's stages: the CLI, `deparrot run` and spark-submit read it.

Each stage module declares its stages (`STAGES = (Stage(...),)`) next to the code that
runs them: the name, a line of help, `run(spark, cfg)` (or `run(cfg)` for jobs that need
no Spark), the flags that shorten `--set`, and, for stages of `deparrot run`, how to tell
the stage has nothing to do. Adding a stage is one module plus one line in
`STAGE_MODULES`; the order of that tuple is the order of `deparrot run`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Modules that declare stages, in pipeline order.
STAGE_MODULES: tuple[str, ...] = (
    "jobs.sample",
    "jobs.ingest",
    "jobs.download",
    "jobs.score",
    "jobs.cluster",
    "jobs.dedup",
    "jobs.publish",
    "jobs.analyze",
    "jobs.report",
    "jobs.sync_score",
    "jobs.sql",
    "jobs.export",
    "jobs.train",
    "jobs.miniature",
    "jobs.pipeline",
    "jobs.demo",
    "jobs.explore",
)


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    # run(spark, cfg) for Spark stages, run(cfg) for plain ones; returns a report.
    run: Callable[..., Any]
    # CLI shortcuts: flag -> dotted config key (`--input X` == `--set ingest.input=X`).
    flags: dict[str, str] = field(default_factory=dict)
    spark: bool = True
    # Part of `deparrot run` (in STAGE_MODULES order).
    pipeline: bool = False
    # skip(spark, cfg) -> a reason when the stage has nothing to do, else None. Stages
    # without one always run (they only do pending work anyway).
    skip: Callable[..., str | None] | None = None
    # The resource it needs: a GPU cluster on Databricks (the model stages).
    gpu: bool = False
    # The lake tables it reads and writes: a stage that finds an input missing names the
    # stage that writes it (the first in registry order), and tests/jobs/test_cli.py checks
    # that every Databricks task waits for the tasks writing what it reads.
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()


def all_stages() -> list[Stage]:
    """Every stage, in registry order (imports the stage modules, not the models)."""
    stages: list[Stage] = []
    for module in STAGE_MODULES:
        stages.extend(importlib.import_module(module).STAGES)
    names = [s.name for s in stages]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"stage names declared twice: {sorted(dupes)}")
    return stages


def get_stage(name: str) -> Stage:
    for stage in all_stages():
        if stage.name == name:
            return stage
    raise KeyError(name)


def producer_of(table: str) -> str | None:
    """The name of the first stage (registry order) that writes `table`."""
    return next((s.name for s in all_stages() if table in s.writes), None)


def pipeline_stages() -> list[Stage]:
    return [s for s in all_stages() if s.pipeline]
