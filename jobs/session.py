"""One way to get a SparkSession with Delta Lake, wherever the job runs.

Databricks and `spark-submit` already own a session (or at least its JVM, master and
packages): reuse it and never stop it. Only on a laptop, where nobody else built one,
deparrot builds a local session and pulls the delta-spark jars through Ivy (cached after
the first run).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.config import SparkConfig

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


class SparkStartError(RuntimeError):
    """The local session could not start (usually: Delta jars could not be resolved)."""


# Rows per Arrow batch handed to a pandas UDF's Python worker: the stages that run models
# or write shards set it for their own jobs only (scoped_conf).
ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"


@contextmanager
def scoped_conf(spark, settings: dict[str, str]) -> Iterator[None]:
    """Session settings for one stage only: set on entry, each restored (or unset) on
    exit, so a later stage in the same session (`deparrot run`) never inherits them."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands Python the gateway through these vars."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(cfg: SparkConfig):  # -> tuple[SparkSession, bool]
    """Return (session, created_here). Only a session created here may be stopped by us."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False

    builder = SparkSession.builder.appName(cfg.app_name)
    builder = builder.config("spark.sql.extensions", DELTA_EXTENSION)
    builder = builder.config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    if launched_by_spark_submit() or not cfg.master:
        # Master, jars and resources come from spark-submit / the cluster, not from us.
        for key, value in cfg.conf.items():
            builder = builder.config(key, value)
        return builder.getOrCreate(), True

    # Local Python workers must run the driver's interpreter (and so see its packages).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = builder.master(cfg.master)
    # Spark's progress bar helps a person at a terminal and garbles CI logs.
    watched = sys.stderr.isatty() and not os.environ.get("CI")
    builder = builder.config("spark.ui.showConsoleProgress", str(watched).lower())
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    quiet = "" if verbose() else quiet_log4j2()
    if quiet:
        options = cfg.conf.get("spark.driver.extraJavaOptions", "")
        builder = builder.config("spark.driver.extraJavaOptions",
                                 f"{options} -Dlog4j2.configurationFile={quiet}".strip())
    try:
        from delta import configure_spark_with_delta_pip
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SparkStartError(
            "delta-spark is not installed: install deparrot with the 'local' extra "
            "(pip install 'deparrot[local]') or run under spark-submit --packages."
        ) from exc
    cached = cached_jars(cfg.extra_packages)
    if cached:
        # Jars resolved by an earlier run: no Ivy resolution (seconds, and a page of its
        # report on stderr at every start).
        builder = builder.config("spark.jars", ",".join(cached))
    else:
        builder = configure_spark_with_delta_pip(builder,
                                                 extra_packages=list(cfg.extra_packages))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:
        raise SparkStartError(
            "Could not start a local Spark session with Delta Lake. The delta-spark jars "
            "are resolved from Maven Central on first use and cached in ~/.ivy2*; without "
            "network access, run once where the repository is reachable, or put the jars "
            "on the classpath yourself (spark.jars) and set spark.master to '' so deparrot "
            f"does not resolve them. Cause: {exc}"
        ) from exc
    if not cached:
        remember_jars(cfg.extra_packages, spark.conf.get("spark.jars", ""))
    return spark, True


VERBOSE_ENV = "DEPARROT_VERBOSE"

# Spark's start-up chatter (the loopback-hostname and native-hadoop WARN lines, the
# "default log4j profile" banner) opens every command and tells a person nothing they can
# act on; warnings from the rest of Spark stay. `deparrot --verbose` brings it all back.
_QUIET_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.utils.name = org.apache.spark.util.Utils
logger.utils.level = error
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
"""


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_log4j2() -> str:
    """A log4j2 file without the start-up chatter, written once into the user's cache."""
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deparrot"
    path = home / f"log4j2-quiet-{hashlib.sha1(_QUIET_LOG4J2.encode()).hexdigest()[:8]}"
    path = path.with_suffix(".properties")
    if not path.is_file():
        try:
            home.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(_QUIET_LOG4J2)
            tmp.replace(path)
        except OSError:  # a read-only home: Spark's own defaults, chatter included
            return ""
    return str(path)


def _jars_record(extra_packages: list[str]) -> Path:
    import pyspark

    try:
        from importlib.metadata import version

        delta = version("delta-spark")
    except Exception:  # pragma: no cover - delta-spark missing: nothing to cache
        delta = "none"
    key = json.dumps([pyspark.__version__, delta, sorted(extra_packages)])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return home / "deparrot" / f"spark-jars-{digest}.json"


def cached_jars(extra_packages: list[str]) -> list[str]:
    """The jar files an earlier resolution of the same packages produced, if all exist."""
    record = _jars_record(list(extra_packages))
    try:
        jars = json.loads(record.read_text())
    except (OSError, ValueError):
        return []
    paths = [j.removeprefix("file://").removeprefix("file:") for j in jars]
    if not paths or not all(Path(p).is_file() for p in paths):
        return []
    return paths


def remember_jars(extra_packages: list[str], spark_jars: str) -> None:
    jars = [j for j in spark_jars.split(",") if j.strip()]
    if not jars:
        return
    record = _jars_record(list(extra_packages))
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(jars))
        tmp.replace(record)
    except OSError:  # a read-only home only costs the next start its Ivy resolution
        pass


@contextmanager
def spark_session(cfg: SparkConfig) -> Iterator:
    """Yield a session; stop it afterwards only if this block created it."""
    spark, created = get_spark(cfg)
    if created and cfg.log_level:
        spark.sparkContext.setLogLevel("WARN" if verbose() else cfg.log_level)
    try:
        yield spark
    finally:
        if created:
            spark.stop()
