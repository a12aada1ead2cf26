"""`deparrot demo`: the README's main job on the embedded local default.

Generates the sample, serves its images from a local HTTP server, runs the whole
pipeline (`deparrot run`) with local Spark and Delta tables in a local folder, then
prints where the result is and SQL queries over it. It starts from a clean folder each
time (only its own `storage.root` with its shared files, `sample.out` and
`cluster.artifacts`).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from jobs.config import Config
from jobs.sample import generate
from jobs.session import spark_session
from jobs.stages import Stage


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def serve(directory: Path, host: str = "127.0.0.1", port: int = 0):
    """Serve `directory` on `host` (a free port unless given) for the length of the block."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def run_demo(cfg: Config) -> None:
    from jobs import pipeline
    from jobs.lake import Lake

    for folder in (cfg.storage.root, cfg.storage.files_root(), cfg.sample.out,
                   cfg.shared(cfg.cluster.artifacts)):
        if folder and Path(folder).exists():
            shutil.rmtree(folder)
    out = Path(cfg.sample.out)
    out.mkdir(parents=True, exist_ok=True)
    with serve(out) as base_url:
        sample = generate(dataclasses.replace(cfg.sample, base_url=base_url))
        print(f"sample: {sample.rows} rows in {sample.out}, served at {base_url}: "
              f"{sample.kinds}")
        cfg = dataclasses.replace(
            cfg, ingest=dataclasses.replace(cfg.ingest, input=str(sample.out / "metadata")))
        with spark_session(cfg.spark) as spark:
            spark.sparkContext.setLogLevel("ERROR")
            pipeline.run(spark, cfg)
            lake = Lake(spark, cfg)
            subset, rejects = lake.register("subset"), lake.register("rejects")
            print(f"\nresult: Delta table {subset.name} at {subset.path or subset.name}")
            queries = [
                f"SELECT kmeans, count(*) AS rows, round(avg(similarity), 3) AS clip_score, "
                f"round(avg(ase_scores), 2) AS aesthetic FROM {subset.name} "
                f"GROUP BY kmeans ORDER BY kmeans",
                f"SELECT stage, reason, count(*) AS rows FROM {rejects.name} "
                f"GROUP BY stage, reason ORDER BY stage, reason",
                f"SELECT (SELECT count(*) FROM {subset.name}) AS subset_rows, "
                f"(SELECT count(*) FROM {rejects.name}) AS rejected_rows",
            ]
            for query in queries:
                print(f"spark.sql> {query}")
                spark.sql(query).show(truncate=False)
            print(f"input rows: {sample.rows} = subset + rejected (every row accounted for)")
            _analysis(spark, cfg)


def _analysis(spark, cfg: Config) -> None:
    """The paper's parrot statistics on the demo data, and the report a person reads."""
    from jobs import analyze, report

    stats = analyze.run(spark, cfg)
    share = stats.summary.get("images_with_text_share", 0.0)
    print(f"\nparrot statistics: {stats.rows} scored images, {share:.1%} with text, "
          f"CoTR over text images {stats.summary.get('cotr_text', 0.0):.3f} "
          f"(tables {', '.join(stats.tables.values())})")
    page = report.run(spark, cfg)
    print(f"open the report in a browser: file://{page.path}")
    print("check every decision, with its evidence, in the workbench: "
          "deparrot explore --config conf/demo.yaml")


STAGES = (Stage("demo", "generate the sample and run the whole pipeline on it locally",
                run_demo, spark=False),)
