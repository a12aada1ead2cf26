"""The `deparrot` console script: one subcommand per job, all sharing --config/--set.

Databricks `python_wheel_task`s, spark-submit (`jobs/<job>.py`) and a laptop shell all
end up in `main()` here, so the three run the same code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

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


def _with_spark(job: Callable[..., object]) -> Callable[[Config], object]:
    def runner(cfg: Config) -> object:
        from jobs.session import spark_session

        with spark_session(cfg.spark) as spark:
            return job(spark, cfg)

    return runner


def _sample(cfg: Config) -> object:
    from jobs.sample import generate

    return generate(cfg.sample)


def _ingest(spark, cfg: Config) -> object:
    from jobs.ingest import run

    return run(spark, cfg)


def _download(spark, cfg: Config) -> object:
    from jobs.download import run

    return run(spark, cfg)


def _score(spark, cfg: Config) -> object:
    from jobs.score import run

    return run(spark, cfg)


def _cluster_train(spark, cfg: Config) -> object:
    from jobs.cluster import train

    return train(spark, cfg)


def _cluster_assign(spark, cfg: Config) -> object:
    from jobs.cluster import assign

    return assign(spark, cfg)


def _dedup(spark, cfg: Config) -> object:
    from jobs.dedup import run

    return run(spark, cfg)


def _publish(spark, cfg: Config) -> object:
    from jobs.publish import run

    return run(spark, cfg)


def _pipeline(spark, cfg: Config) -> object:
    from jobs.pipeline import run

    return run(spark, cfg)


def _demo(cfg: Config) -> object:
    from jobs.demo import run_demo

    return run_demo(cfg)


RUNNERS: dict[str, Callable[[Config], object]] = {
    "sample": _sample,
    "ingest": _with_spark(_ingest),
    "download": _with_spark(_download),
    "score": _with_spark(_score),
    "cluster-train": _with_spark(_cluster_train),
    "cluster-assign": _with_spark(_cluster_assign),
    "dedup": _with_spark(_dedup),
    "publish": _with_spark(_publish),
    "run": _with_spark(_pipeline),
    "demo": _demo,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        command, cfg = parse(argv)
    except ConfigError as exc:
        print(f"deparrot: config error: {exc}", file=sys.stderr)
        return 2
    result = RUNNERS[command](cfg)
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
