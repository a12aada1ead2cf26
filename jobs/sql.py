"""`deparrot sql`: SQL over the configuration's tables from any new shell.

Path tables live under `storage.root` and a fresh Spark session knows nothing of them;
this registers every table of the configuration that exists (by its name in
`tables.*`, in `storage.schema`) and the SQL views below, then runs the query, or reads
queries from a prompt when none is given (end each with `;`, `exit` to leave).
"""

from __future__ import annotations

import dataclasses
import sys

from pyspark.sql import SparkSession

from jobs.config import Config
from jobs.errors import UserError
from jobs.lake import Lake
from jobs.stages import Stage

# name -> SQL over the registered tables ({t} expands to a table's qualified name).
VIEWS = {
    "reject_reasons": "SELECT stage, reason, count(*) AS rows FROM {rejects} "
                      "GROUP BY stage, reason ORDER BY stage, rows DESC",
    "subset_by_cluster": "SELECT kmeans, count(*) AS rows, avg(similarity) AS clip_score, "
                         "avg(ase_scores) AS aesthetic FROM {subset} GROUP BY kmeans",
}


def register_all(spark: SparkSession, cfg: Config) -> list[str]:
    """Register every existing table and the views whose tables exist; their names."""
    lake = Lake(spark, cfg)
    names: dict[str, str] = {}
    for f in dataclasses.fields(cfg.tables):
        if lake.exists(f.name):
            names[f.name] = lake.register(f.name).name
    prefix = lake.ref("subset").name.rpartition(".")[0]
    for view, sql in VIEWS.items():
        try:
            text = sql.format(**names)
        except KeyError:
            continue  # a table it reads does not exist yet
        qualified = f"{prefix}.{view}" if prefix else view
        spark.sql(f"CREATE OR REPLACE VIEW {qualified} AS {text}")
        names[view] = qualified
    return sorted(names.values())


def run_query(spark: SparkSession, query: str, rows: int = 50) -> None:
    try:
        df = spark.sql(query)
    except Exception as exc:
        from jobs.errors import first_line

        raise UserError(f"query failed: {first_line(exc)}") from None
    df.show(rows, truncate=False)


def prompt(spark: SparkSession) -> None:
    """A small read-eval-print loop: statements end with `;`."""
    buffer: list[str] = []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("sql> " if not buffer else "...> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or (not buffer and line.strip().lower() in ("exit", "quit")):
            return
        buffer.append(line)
        if line.rstrip().endswith(";"):
            query = "".join(buffer).strip().rstrip(";")
            buffer = []
            try:
                run_query(spark, query)
            except UserError as exc:
                print(exc, file=sys.stderr)


def run(spark: SparkSession, cfg: Config, query: str | None = None) -> None:
    tables = register_all(spark, cfg)
    if not tables:
        raise UserError(f"no deparrot tables under {cfg.storage.root or cfg.storage.schema}: "
                        "is --config the one the tables were written with?")
    if query:
        run_query(spark, query)
    else:
        print("tables: " + ", ".join(tables), file=sys.stderr)
        prompt(spark)


run.cli_arguments = {"query": {"nargs": "?", "help": "SQL to run; none = a prompt"}}

STAGES = (Stage("sql", "run SQL over the tables of a configuration (or a prompt)", run),)
