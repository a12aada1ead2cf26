"""The `deparrot` console script: one subcommand per job, all sharing --config/--set.

Databricks `python_wheel_task`s, spark-submit (`jobs/<job>.py`) and a laptop shell all
end up in `main()` here, so the three run the same code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from jobs.config import Config, ConfigError, load_config

# subcommand -> (help, {flag: dotted config key}) ; flags are shortcuts for --set.
COMMANDS: dict[str, tuple[str, dict[str, str]]] = {
    "sample": ("write a generated LAION-style sample (metadata + images)",
               {"--out": "sample.out", "--rows": "sample.rows"}),
    "ingest": ("LAION-style parquet metadata -> Delta metadata table",
               {"--input": "ingest.input", "--family": "ingest.family"}),
    "download": ("fetch the images (or read img2dataset shards) -> Delta images table",
                 {"--source": "download.source", "--shards": "download.shards"}),
    "score": ("OCR text spotting, CLIP score, aesthetics -> Delta scores table", {}),
    "cluster-train": ("PCA + faiss k-means on a sample of B/32 image embeddings", {}),
    "cluster-assign": ("nearest centroid (kmeans) for every scored row", {}),
    "dedup": ("exact and near-duplicate removal within clusters", {}),
    "publish": ("apply the recipe; write the subset partition by partition", {}),
    "run": ("the whole pipeline, skipping stages whose output is complete",
            {"--input": "ingest.input"}),
    "demo": ("generate the sample and run the whole pipeline on it locally", {}),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deparrot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, flags) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help="YAML config file (may `extends:` another)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key, e.g. --set ingest.family=laion2b")
        for flag, key in flags.items():
            p.add_argument(flag, dest=key, metavar=key.split(".")[-1].upper(),
                           help=f"shortcut for --set {key}=...")
    return parser


def parse(argv: list[str]) -> tuple[str, Config]:
    args = build_parser().parse_args(argv)
    overrides = list(args.set)
    for _, key in COMMANDS[args.command][1].items():
        value = getattr(args, key, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return args.command, load_config(args.config, overrides)


# subcommand -> (module, function); Spark jobs take (spark, cfg), the others (cfg).
# Modules are imported only when their command runs, so `--help` stays fast.
SPARK_JOBS: dict[str, tuple[str, str]] = {
    "ingest": ("jobs.ingest", "run"),
    "download": ("jobs.download", "run"),
    "score": ("jobs.score", "run"),
    "cluster-train": ("jobs.cluster", "train"),
    "cluster-assign": ("jobs.cluster", "assign"),
    "dedup": ("jobs.dedup", "run"),
    "publish": ("jobs.publish", "run"),
    "run": ("jobs.pipeline", "run"),
}
PLAIN_JOBS: dict[str, tuple[str, str]] = {
    "sample": ("jobs.sample", "generate_from_config"),
    "demo": ("jobs.demo", "run_demo"),
}


def run_command(command: str, cfg: Config) -> object:
    if command in PLAIN_JOBS:
        module, name = PLAIN_JOBS[command]
        return getattr(importlib.import_module(module), name)(cfg)
    from jobs.session import spark_session

    module, name = SPARK_JOBS[command]
    job = getattr(importlib.import_module(module), name)
    with spark_session(cfg.spark) as spark:
        return job(spark, cfg)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        command, cfg = parse(argv)
    except ConfigError as exc:
        print(f"deparrot: config error: {exc}", file=sys.stderr)
        return 2
    result = run_command(command, cfg)
    if result is not None:
        print(json.dumps(_jsonable(result), indent=2, default=str))
    return 0


def _jsonable(obj: object) -> object:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = dataclasses.asdict(obj)
        for name in dir(type(obj)):
            if isinstance(getattr(type(obj), name, None), property):
                out[name] = getattr(obj, name)
        return out
    return obj


if __name__ == "__main__":
    sys.exit(main())
