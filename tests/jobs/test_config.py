import re
from pathlib import Path

import pytest

from jobs.config import ConfigError, load_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_defaults_and_dotted_overrides():
    cfg = load_config(None, ["ingest.family=laion2b", "ingest.max_side=5000",
                             "spark.conf.spark.sql.shuffle.partitions=4"])
    assert cfg.ingest.family == "laion2b"
    assert cfg.ingest.max_side == 5000.0
    assert cfg.spark.conf == {"spark.sql.shuffle.partitions": "4"}


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="ingest.famly"):
        load_config(None, ["ingest.famly=laion2b"])


def test_unknown_key_in_file_is_named(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("storage:\n  rot: /tmp\n")
    with pytest.raises(ConfigError, match="storage.rot"):
        load_config(path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="sample.rows must be an integer"):
        load_config(None, ["sample.rows=many"])


def test_extends_overlays_base(tmp_path):
    (tmp_path / "base.yaml").write_text("ingest:\n  family: datacomp\n  max_side: 10\n")
    (tmp_path / "env.yaml").write_text("extends: base.yaml\ningest:\n  max_side: 20\n")
    cfg = load_config(tmp_path / "env.yaml", ["ingest.require_text=false"])
    assert (cfg.ingest.family, cfg.ingest.max_side, cfg.ingest.require_text) == (
        "datacomp", 20.0, False)


@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("*.yaml")))
def test_every_shipped_config_loads(name):
    load_config(CONF / name)


@pytest.mark.parametrize("override, message", [
    ("score.batch_size=-5", "score.batch_size must be >= 1, got -5"),
    ("score.rows_per_commit=0", "score.rows_per_commit must be >= 1"),
    ("download.concurrency=0", "download.concurrency must be >= 1"),
    ("download.rows_per_commit=-1", "download.rows_per_commit must be >= 1"),
    ("recipe.min_clip_score=1.5", "recipe.min_clip_score must be in [-1, 1]"),
    ("recipe.dedup_threshold=2", "recipe.dedup_threshold must be in [0, 1]"),
    ("recipe.dedup_block_size=0", "recipe.dedup_block_size must be >= 1"),
    ("cluster.k=0", "cluster.k must be >= 1"),
    ("publish.clusters_per_partition=0", "publish.clusters_per_partition must be >= 1"),
    ("ingest.max_side=0", "ingest.max_side must be >= 1"),
])
def test_settings_that_cannot_work_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


@pytest.mark.parametrize("override, message", [
    ("recipe.text_policy=ocr",
     "recipe.text_policy must be one of any_text, parrots, tmars, got 'ocr'"),
    ("recipe.max_cotr=1.5", "recipe.max_cotr must be in [0, 1], got 1.5"),
    ("recipe.min_masked_clip_score=2", "recipe.min_masked_clip_score must be in [-1, 1]"),
    ("score.text_mask=blur", "score.text_mask must be one of mean, inpaint, got 'blur'"),
    ("score.masked_clip_score=maybe", "score.masked_clip_score must be true or false"),
])
def test_text_policy_settings_are_checked_in_one_line(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value)


def test_text_policy_defaults_and_overrides():
    cfg = load_config(None)
    assert (cfg.recipe.text_policy, cfg.recipe.max_cotr, cfg.recipe.min_masked_clip_score,
            cfg.score.masked_clip_score, cfg.score.text_mask) == (
        "any_text", 0.0, cfg.recipe.min_clip_score, True, "mean")
    cfg = load_config(None, ["recipe.text_policy=tmars", "recipe.min_masked_clip_score=0.25",
                             "score.text_mask=inpaint"])
    assert (cfg.recipe.text_policy, cfg.recipe.min_masked_clip_score) == ("tmars", 0.25)
    assert cfg.score.settings().text_mask == "inpaint"  # reaches the executors
