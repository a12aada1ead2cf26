"""The `deparrot` console script: one subcommand per registered stage (jobs/stages.py).

Databricks `python_wheel_task`s, spark-submit (`jobs/submit.py STAGE ...`) and a laptop
shell all end up in `main()` here, so the three run the same code. Bad input ends in one
line on stderr and exit status 2; a commit that lost a race with another run ends in one
line and exit status 3; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from jobs.config import Config, load_config
from jobs.errors import (
    ConcurrentRunError,
    UserError,
    first_line,
    is_concurrent_write,
    suspected_bug,
)
from jobs.stages import Stage, all_stages
from udfs.storage import StorageError

EXIT_USER_ERROR = 2
EXIT_CONCURRENT_RUN = 3
EXIT_SUSPECTED_BUG = 4


def build_parser(stages: list[Stage]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deparrot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in stages:
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        p.add_argument("--config", help="YAML config file (may `extends:` another)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key, e.g. --set ingest.family=laion2b")
        p.add_argument("--verbose", action="store_true",
                       help="show Spark's start-up warnings and torch's INFO logs")
        for flag, key in stage.flags.items():
            p.add_argument(flag, dest=key, metavar=key.split(".")[-1].upper(),
                           help=f"shortcut for --set {key}=...")
        for name, kwargs in getattr(stage.run, "cli_arguments", {}).items():
            p.add_argument(name, **kwargs)
    return parser


def parse(argv: list[str]) -> tuple[Stage, Config, argparse.Namespace]:
    stages = all_stages()
    args = build_parser(stages).parse_args(argv)
    stage = next(s for s in stages if s.name == args.command)
    if args.verbose:
        from jobs.session import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"  # read by the session and by training processes
    overrides = list(args.set)
    for key in stage.flags.values():
        value = getattr(args, key, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return stage, load_config(args.config, overrides), args


def run_stage(stage: Stage, cfg: Config, args: argparse.Namespace | None = None) -> object:
    """Run one stage in the right session (reused if one is active, else built locally)."""
    extra = _extra_arguments(stage, args)
    if not stage.spark:
        return stage.run(cfg, **extra)
    from jobs.session import spark_session

    with spark_session(cfg.spark) as spark:
        return stage.run(spark, cfg, **extra)


def _extra_arguments(stage: Stage, args: argparse.Namespace | None) -> dict[str, object]:
    names = getattr(stage.run, "cli_arguments", {})
    if args is None:
        return {}
    extra = {n.lstrip("-").replace("-", "_"): getattr(args, n.lstrip("-").replace("-", "_"))
             for n in names}
    if getattr(stage.run, "wants_config_path", False):
        extra["config_path"] = args.config  # printed in commands the stage suggests
    return extra


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "deparrot"
    try:
        stage, cfg, args = parse(argv)
        result = run_stage(stage, cfg, args)
    except (UserError, StorageError) as exc:
        print(f"deparrot {command}: {first_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ConcurrentRunError as exc:
        print(f"deparrot {command}: {exc}", file=sys.stderr)
        return EXIT_CONCURRENT_RUN
    except Exception as exc:
        bug = suspected_bug(exc)
        if bug:
            print(f"deparrot {command}: {bug} The executor log has its traceback.",
                  file=sys.stderr)
            return EXIT_SUSPECTED_BUG
        if not is_concurrent_write(exc):
            raise
        print(f"deparrot {command}: another run is writing the same tables and committed "
              f"first ({first_line(exc)[:160]}); run again when it has finished: every "
              "stage resumes where the tables are", file=sys.stderr)
        return EXIT_CONCURRENT_RUN
    if result is not None:
        print(json.dumps(_jsonable(result), indent=2, default=str))
    return 0


def _jsonable(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = dataclasses.asdict(obj)
        for name in dir(type(obj)):
            if isinstance(getattr(type(obj), name, None), property):
                out[name] = getattr(obj, name)
        return out
    return obj


if __name__ == "__main__":
    sys.exit(main())
