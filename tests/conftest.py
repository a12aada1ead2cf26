"""Shared fixtures: one real local Spark session with Delta Lake for the whole run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jobs.config import Config, load_config


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items or _cuda_available():  # importing torch costs seconds: only if needed
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from jobs.session import get_spark

    warehouse = tmp_path_factory.mktemp("warehouse")
    cfg = load_config(
        None,
        [
            "spark.master=local[2]",
            "spark.app_name=deparrot-tests",
            "spark.conf.spark.sql.shuffle.partitions=2",
            "spark.conf.spark.default.parallelism=2",
            "spark.conf.spark.ui.enabled=false",
            "spark.conf.spark.ui.showConsoleProgress=false",
            "spark.conf.spark.databricks.delta.snapshotPartitions=1",
            "spark.conf.spark.databricks.delta.log.cacheSize=3",
            "spark.conf.spark.driver.memory=4g",
            f"spark.conf.spark.sql.warehouse.dir={warehouse}",
        ],
    )
    session, created = get_spark(cfg.spark)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    if created:
        session.stop()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """A config whose tables live in this test's own folder and schema."""
    base = load_config(None, [f"storage.root={tmp_path / 'lake'}"])
    schema = "t_" + tmp_path.name.replace("-", "_").lower()[-40:]
    return dataclasses.replace(base, storage=dataclasses.replace(base.storage, schema=schema))
