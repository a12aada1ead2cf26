"""`deparrot explore` (the curator's workbench): each page's latency through a real HTTP
server at 10^5 rows, and the what-if at 10^6 rows, beside Spark.

    nice -n 19 .venv/bin/python benchmarks/bench_explore.py
    .venv/bin/python benchmarks/bench_explore.py --rows 300 --whatif-rows 2000 \\
        --clip-model deparrot-tiny-vit:random --embed-dim 32 --no-spark-baseline  # ~30 s

The lakes come from benchmarks/explore_lake.py (the pipeline's tables, consistent with the
default recipe; scores from `--clip-model`, random weights, so meaning search runs that
model's real text tower): one of `--rows` rows with images, one of `--whatif-rows` rows
without image bytes (a what-if never reads them). Each is generated once under
`--lake-dir` and reused; the line says how long generation took.

At `--rows`, the workbench is opened as `deparrot explore` opens it (Workbench.open, then
build_app served by uvicorn in a thread) and asked over HTTP:
- start-up: Workbench.open until the first page (the funnel) has been served;
- gallery pages with different filters and pages; thumbnails (/image/<id>); row detail
  pages (/row/<id>);
- search: caption text, meaning (the CLIP text tower; its first call, the model load, on a
  line of its own) and more like this (its first call loads the embeddings);
- what-if recomputations (/whatif/result with changed knobs).
At `--whatif-rows`, `Decisions.whatif` in process (a page adds its rendering, the same
at any size) with the same changed knobs.

Goals: every page <= 300 ms p95 at 10^5 rows; a what-if <= 1 s p95 at 10^6. One-time
loads are printed without a goal ("info"). Baseline: the same what-if counts from Spark
(jobs/publish.py `classify`, publish's own rule, over the same Delta tables, local[2]),
after a warm-up query (its line says "first"); the counts must agree (exit status 1 if
not), and the ratio is the workbench's p50 (the page at `--rows`, in process at
`--whatif-rows`) over Spark's on the same knobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from explore_lake import WORDS, LakeShape, write_lake  # noqa: E402

PAGE_GOAL_MS = 300.0
WHATIF_GOAL_MS = 1000.0
POLICIES = ("any_text", "parrots", "tmars")


# ---------------------------------------------------------------------- lakes
def lake(lake_dir: str, shape: LakeShape) -> str:
    """The lake of `shape` under `lake_dir`, generated on first use."""
    model = re.sub(r"[^A-Za-z0-9]+", "-", shape.clip_model).strip("-")
    name = (f"rows{shape.rows}-dim{shape.embed_dim}-{model}-seed{shape.seed}"
            + ("" if shape.images else "-noimages"))
    path = Path(lake_dir) / name
    marker = path / "bench_lake.json"
    what = (f"lake {shape.rows:,} rows (embed_dim {shape.embed_dim}, {shape.clip_model}, "
            f"{'with' if shape.images else 'no'} images)")
    if marker.exists():
        seconds = json.loads(marker.read_text())["seconds"]
        print(f"{what}: cached, generated in {seconds:.1f} s  {path}", flush=True)
        return str(path)
    shutil.rmtree(path, ignore_errors=True)  # an interrupted generation
    started = time.perf_counter()
    counts = write_lake(str(path), shape)
    seconds = time.perf_counter() - started
    marker.write_text(json.dumps({"seconds": seconds, "counts": counts,
                                  "shape": dataclasses.asdict(shape)}))
    print(f"{what}: generated in {seconds:.1f} s  {path}", flush=True)
    return str(path)


def config(root: str, config_path: str, overrides: Sequence[str] = ()):
    from jobs.config import load_config

    return load_config(config_path, [f"storage.root={root}", *overrides])


# ---------------------------------------------------------------------- printing
class Report:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def latency(self, name: str, seconds: Sequence[float], goal_ms: float | None) -> float:
        """One line: p50 and p95 of `seconds`, PASS/FAIL on p95 against `goal_ms`."""
        ms = np.asarray(seconds) * 1000
        p50, p95 = float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
        if goal_ms is None:
            goal, verdict = "", "info"
        else:
            goal, verdict = f"goal p95 <= {goal_ms:.0f} ms", "PASS" if p95 <= goal_ms else "FAIL"
            if verdict == "FAIL":
                self.failed.append(name)
        print(f"{name:<40} n={len(ms):<3} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  "
              f"{goal:<21}{verdict}", flush=True)
        return p50

    def once(self, name: str, seconds: float, note: str = "") -> None:
        print(f"{name:<40} {seconds:8.2f} s  {note}".rstrip() + "  info", flush=True)


# ---------------------------------------------------------------------- the server
class Served:
    """`app` on a free loopback port, served by uvicorn in a thread.

    uvicorn binds host and port itself, as `deparrot explore` has it do: handing it a
    socket made here (protocol 0) would leave asyncio's TCP_NODELAY off, and every
    keep-alive response would wait 40 ms for a delayed ACK."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.002)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Client:
    def __init__(self, base_url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=base_url, trust_env=False, timeout=600)

    def get(self, path: str, params: dict | None = None, kind: str = "text/html"):
        response = self.http.get(path, params=params)
        got = response.headers.get("content-type", "")
        if response.status_code != 200 or not got.startswith(kind):
            raise RuntimeError(f"GET {path} {params or ''}: {response.status_code} {got}: "
                               f"{response.text[:200]!r}")
        return response

    def timed(self, path: str, params: dict | None = None, kind: str = "text/html") -> float:
        started = time.perf_counter()
        self.get(path, params, kind)
        return time.perf_counter() - started


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


# ---------------------------------------------------------------------- what the curator asks
def gallery_queries(wb, n: int) -> list[dict]:
    """`n` gallery requests: every filter the form has, alone and together, on a few pages."""
    reasons = wb.decisions.reasons()
    stages = sorted({r.split(":", 1)[0] for r in reasons if ":" in r})
    clusters = wb.decisions.clusters()
    filters: list[dict] = [{}]
    filters += [{"published": r} for r in reasons]
    filters += [{"published": s} for s in stages]
    filters += [{"cluster": c} for c in clusters[:4]]
    filters += [{"policy": p, "policy_verdict": v} for p in POLICIES for v in ("keep", "drop")]
    filters += [{"min_clip": "0.3", "max_clip": "0.33"}, {"min_aesthetic": "5.2"},
                {"published": "kept", "cluster": clusters[0] if clusters else 0,
                 "min_aesthetic": "4.8"},
                {"policy": "parrots", "policy_verdict": "drop", "max_clip": "0.3"}]
    pages = (0, 1, 3, 0, 20, 2)
    out = []
    for i in range(n):
        q = {k: str(v) for k, v in filters[i % len(filters)].items()}
        q["page"] = str(pages[i % len(pages)])
        out.append(q)
    return out


def sample_ids(wb, where: str, n: int, salt: int) -> list[int]:
    rows = wb.decisions.con.execute(
        f"SELECT sample_id FROM rows WHERE {where} ORDER BY hash(sample_id + {salt}) "
        f"LIMIT {int(n)}").fetchall()
    if not rows:
        raise RuntimeError(f"no rows with {where}")
    return [int(s) for (s,) in rows] * (n // len(rows) + 1)


def phrases(n: int, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, words)) for _ in range(n)]


def whatif_knobs(n: int):
    """`n` what-ifs that each move every knob away from the configured recipe."""
    from jobs.explore.decisions import WhatIf

    return [WhatIf(min_clip_score=round(0.26 + 0.005 * (i % 17), 4),
                   min_aesthetic=round(4.2 + 0.1 * (i % 9), 2),
                   text_policy=POLICIES[i % len(POLICIES)],
                   max_cotr=round(0.1 * (i % 5), 2),
                   min_masked_clip_score=round(0.25 + 0.01 * (i % 7), 3))
            for i in range(n)]


# ---------------------------------------------------------------------- the measurements
def pages(root: str, args, report: Report) -> tuple[dict[int, float], dict[int, dict]]:
    """Every page at `--rows`, over HTTP; returns the what-ifs' seconds and counts by knob."""
    from jobs.explore.app import build_app
    from jobs.explore.workbench import Workbench

    cfg = config(root, args.config)
    n = args.requests
    started = time.perf_counter()
    wb = Workbench.open(cfg)
    opened = time.perf_counter() - started
    with Served(build_app(wb, "", args.config)) as served:
        client = Client(served.url)
        client.get("/")
        report.once("start-up (open + first page)", time.perf_counter() - started,
                    f"(Workbench.open {opened:.2f} s, of which decisions "
                    f"{wb.decisions.load_seconds:.2f} s; {wb.decisions.n_rows:,} rows)")

        report.latency("gallery page", [client.timed("/gallery", q)
                                        for q in gallery_queries(wb, n)], PAGE_GOAL_MS)
        ids = sample_ids(wb, "image_status = 'ok'", n, 1)
        report.latency("thumbnail /image/<id>", [client.timed(f"/image/{s}", kind="image/")
                                                 for s in ids[:n]], PAGE_GOAL_MS)
        ids = sample_ids(wb, "TRUE", n, 2)
        report.latency("row detail /row/<id>", [client.timed(f"/row/{s}") for s in ids[:n]],
                       PAGE_GOAL_MS)

        texts = phrases(n, 1, 3)
        report.latency("search caption", [
            client.timed("/search", {"q": t, "mode": "caption", "page": str(i % 2)})
            for i, t in enumerate(texts)], PAGE_GOAL_MS)
        ids = sample_ids(wb, "score_status = 'ok'", n + 1, 4)
        report.once("search more-like first (embeddings)",
                    client.timed("/search", {"like": str(ids[n])}))
        report.once("search meaning first (text tower)",
                    client.timed("/search", {"q": "a red bicycle", "mode": "meaning"}),
                    f"({wb.index.model_spec})")
        report.latency("search meaning", [
            client.timed("/search", {"q": t, "mode": "meaning"}) for t in phrases(n, 3, 5)],
            PAGE_GOAL_MS)
        report.latency("search more-like", [client.timed("/search", {"like": str(s)})
                                            for s in ids[:n]], PAGE_GOAL_MS)

        knobs = whatif_knobs(n)
        seconds = {i: client.timed("/whatif/result", dataclasses.asdict(w))
                   for i, w in enumerate(knobs)}
        report.latency("what-if /whatif/result", list(seconds.values()), PAGE_GOAL_MS)
    counts = {i: dict(wb.decisions.whatif(knobs[i])["counts"])
              for i in range(min(n, args.spark_whatifs))}
    return seconds, counts


def whatif_in_process(root: str, args, report: Report) -> tuple[dict[int, float],
                                                                 dict[int, dict]]:
    from jobs.explore.decisions import Decisions
    from jobs.explore.tables import DeltaSource

    cfg = config(root, args.config)
    started = time.perf_counter()
    decisions = Decisions(DeltaSource(cfg), cfg)
    report.once(f"what-if lake load, {decisions.n_rows:,} rows", time.perf_counter() - started,
                "(Decisions: read, join, CoTR once per row)")
    seconds, counts = {}, {}
    for i, w in enumerate(whatif_knobs(args.requests)):
        started = time.perf_counter()
        result = decisions.whatif(w)
        seconds[i] = time.perf_counter() - started
        counts[i] = dict(result["counts"])
    report.latency(f"what-if in process, {decisions.n_rows:,} rows", list(seconds.values()),
                   WHATIF_GOAL_MS)
    return seconds, counts


class PathLake:
    """What jobs/publish.py `classify` reads: the lake's path tables (nothing registered
    in a catalog, so two lakes can share one session)."""

    def __init__(self, spark, root: str, cfg) -> None:
        self.spark, self.root, self.cfg = spark, root, cfg

    def read(self, key: str, version: int | None = None):
        return self.spark.read.format("delta").load(
            f"{self.root}/{getattr(self.cfg.tables, key)}")


def spark_counts(spark, root: str, cfg, w) -> dict[str, int]:
    from pyspark.sql import functions as F

    from jobs.publish import classify

    run_cfg = dataclasses.replace(cfg, recipe=w.recipe(cfg.recipe))
    rows = (classify(PathLake(spark, root, cfg), run_cfg)
            .groupBy(F.coalesce("reason", F.lit("kept")).alias("r")).count().collect())
    return {r["r"]: int(r["count"]) for r in rows}


def spark_baseline(lakes: list[tuple[str, str, dict[int, float], dict[int, dict]]], args,
                   report: Report) -> bool:
    """Spark's what-if on each lake, against the workbench's counts and times."""
    from jobs.session import get_spark

    warehouse = tempfile.mkdtemp(prefix="deparrot-bench-explore-")
    cfg = config(lakes[0][1], args.config, [f"spark.conf.spark.sql.warehouse.dir={warehouse}"])
    started = time.perf_counter()
    spark, created = get_spark(cfg.spark)
    spark.sparkContext.setLogLevel("FATAL")
    report.once("spark session start", time.perf_counter() - started,
                f"({cfg.spark.master or 'the active session'})")
    agree = True
    knobs = whatif_knobs(args.spark_whatifs)
    try:
        for label, root, wb_seconds, wb_counts in lakes:
            cfg = config(root, args.config)
            report.once(f"spark what-if {label}, first",
                        timed(lambda root=root, cfg=cfg: spark_counts(spark, root, cfg,
                                                                      knobs[0])))
            seconds, same = [], 0
            for i, w in enumerate(knobs):
                started = time.perf_counter()
                counts = spark_counts(spark, root, cfg, w)
                seconds.append(time.perf_counter() - started)
                if counts == wb_counts[i]:
                    same += 1
                else:
                    agree = False
                    print(f"  counts differ for {w}:\n    workbench {sorted(wb_counts[i].items())}"
                          f"\n    spark     {sorted(counts.items())}", flush=True)
            spark_p50 = report.latency(f"spark what-if {label}", seconds, None)
            mine = float(np.percentile([wb_seconds[i] for i in range(len(knobs))], 50) * 1000)
            print(f"{'workbench / spark, ' + label:<40} p50 {mine:8.1f} ms / "
                  f"{spark_p50:.1f} ms = {mine / spark_p50:.3f}; counts agree "
                  f"{same}/{len(knobs)} {'PASS' if same == len(knobs) else 'FAIL'}",
                  flush=True)
    finally:
        if created:
            spark.stop()
        shutil.rmtree(warehouse, ignore_errors=True)
    return agree


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000,
                        help="rows of the lake whose pages are timed (default 10^5)")
    parser.add_argument("--whatif-rows", type=int, default=1_000_000,
                        help="rows of the lake whose what-if is timed in process (10^6)")
    parser.add_argument("--embed-dim", type=int, default=512,
                        help="image embedding size; 32 for deparrot-tiny-vit")
    parser.add_argument("--clip-model", default="ViT-B-32:random",
                        help="the model the scores table records (name:random)")
    parser.add_argument("--lake-dir", default="/tmp/deparrot_bench_explore",
                        help="where generated lakes are kept and reused")
    parser.add_argument("--requests", type=int, default=30, help="requests per measurement")
    parser.add_argument("--spark-whatifs", type=int, default=3,
                        help="what-ifs Spark repeats per lake (after one warm-up)")
    parser.add_argument("--no-spark-baseline", action="store_true")
    parser.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    args = parser.parse_args(argv)
    args.spark_whatifs = max(1, min(args.spark_whatifs, args.requests))

    report = Report()
    shape = LakeShape(rows=args.rows, embed_dim=args.embed_dim, clip_model=args.clip_model)
    root = lake(args.lake_dir, shape)
    big = lake(args.lake_dir, dataclasses.replace(shape, rows=args.whatif_rows, images=False))
    page_seconds, page_counts = pages(root, args, report)
    gc.collect()
    whatif_seconds, whatif_counts = whatif_in_process(big, args, report)
    gc.collect()
    agree = True
    if not args.no_spark_baseline:
        agree = spark_baseline([(f"{args.rows:,} rows", root, page_seconds, page_counts),
                                (f"{args.whatif_rows:,} rows", big, whatif_seconds,
                                 whatif_counts)], args, report)
    print(f"goals: {'all PASS' if not report.failed else 'FAIL ' + ', '.join(report.failed)}"
          f"{'' if agree else '; Spark counts DIFFER'}", flush=True)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
