# Databricks notebook source
# MAGIC %md
# MAGIC # deparrot quickstart: the whole pipeline on a small generated sample
# MAGIC What `deparrot demo` does on a laptop, in this notebook's Spark session:
# MAGIC
# MAGIC 1. `deparrot sample` writes a small LAION-style sample with every case the recipe
# MAGIC    must handle (photos, images with text whose caption repeats it, exact and near
# MAGIC    duplicates, broken images, invalid metadata rows);
# MAGIC 2. the driver serves the sample's images over HTTP while `deparrot run`'s stages
# MAGIC    (jobs/stages.py: ingest, download, score, cluster, dedup, publish) run here;
# MAGIC 3. the workbench shows the funnel: every input row kept, rejected with its stage
# MAGIC    and reason, or pending. `notebooks/explore.py` goes on from there.
# MAGIC
# MAGIC It runs offline, with the demo's settings (`conf/demo.yaml`): a randomly
# MAGIC initialised tiny CLIP (its scores mean nothing; the scores table says so), the
# MAGIC recipe's CLIP and aesthetic scores reused from the sample's metadata, the real
# MAGIC RapidOCR. Use an ML runtime with torch (databricks.yml's 17.3 ML); a single-node
# MAGIC cluster is enough.
# MAGIC
# MAGIC Widgets: the config file (relative to the repository root, or an absolute path);
# MAGIC the sample's rows (at least 26: 10 of a small sample's rows are invalid or broken,
# MAGIC and the demo's clustering needs 16 rows for its 16 PCA dimensions); `catalog` and
# MAGIC `schema` of the tables (keep them apart from a real run's); `storage_root`: empty
# MAGIC for managed tables, with the sample and the shared files under
# MAGIC `storage.files`/quickstart (a Volume in conf/databricks.yaml), or a mounted folder
# MAGIC for path tables and files alike where the workspace allows path tables (Unity
# MAGIC Catalog keeps tables out of Volumes). Running again resumes: every stage only does
# MAGIC pending work.

# COMMAND ----------

# MAGIC %pip install -q "..[ml,explore]"

# COMMAND ----------

# ruff: noqa: F821, E402 - the notebook's globals (spark, dbutils, displayHTML); imports
# follow the cell that puts the repository on sys.path
import sys
from pathlib import Path

# The repository root: this notebook's folder's parent (a Databricks Git folder runs a
# notebook in its own folder), found by its conf/ and jobs/.
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents)
            if (p / "conf" / "base.yaml").is_file() and (p / "jobs").is_dir())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

dbutils.widgets.text("config", "conf/databricks.yaml", "config file")
dbutils.widgets.text("rows", "48", "sample rows")
dbutils.widgets.text("catalog", "main", "catalog")
dbutils.widgets.text("schema", "deparrot_quickstart", "schema")
dbutils.widgets.text("storage_root", "", "storage root (empty: managed tables)")

# COMMAND ----------

import json
import socket

import yaml

from jobs.config import load_config
from jobs.errors import UserError
from udfs.storage import is_remote, join, local_path


def dotted(section: str, values: dict) -> list[str]:
    """A YAML section as `--set` overrides (`score.clip_model=...`)."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += dotted(f"{section}.{key}", value)
        else:
            out.append(f"{section}.{key}={json.dumps(value)}")
    return out


def driver_address() -> str:
    """The driver's address as the executors reach it (loopback on a single node)."""
    try:
        return socket.gethostbyname(spark.conf.get("spark.driver.host"))
    except Exception:  # Spark Connect has no driver host to ask: the driver is local
        return "127.0.0.1"


# The demo's offline settings: random tiny CLIP, reused scores, small clusters.
demo = yaml.safe_load((ROOT / "conf" / "demo.yaml").read_text())
OFFLINE = [s for k in ("download", "score", "cluster", "publish", "recipe")
           for s in dotted(k, demo.get(k) or {})]

config_path = dbutils.widgets.get("config").strip()
root = dbutils.widgets.get("storage_root").strip()
where = [f"storage.catalog={dbutils.widgets.get('catalog').strip()}",
         f"storage.schema={dbutils.widgets.get('schema').strip()}",
         f"storage.root={root}"]
config_file = Path(config_path) if Path(config_path).is_absolute() else ROOT / config_path
# Everything that is not a table goes under the root (its _files folder), or under a
# quickstart/ folder of the configured shared storage (apart from a real run's files).
base = load_config(config_file, OFFLINE + where + (["storage.files="] if root else []))
files = base.storage.files_root() if root else join(base.storage.files_root(), "quickstart")
sample_dir = join(files, "sample")
if is_remote(sample_dir):
    raise UserError(f"the sample is written with local file calls, {sample_dir} is not a "
                    "mounted path: give a storage_root on a Volume (/Volumes/...)")
rows = int(dbutils.widgets.get("rows"))
# The sample's 6 invalid and 4 broken rows never reach clustering, whose PCA needs at
# least pca_dim rows.
if rows < base.cluster.pca_dim + 10:
    raise UserError(f"rows={rows}: the quickstart needs at least "
                    f"{base.cluster.pca_dim + 10} (cluster.pca_dim={base.cluster.pca_dim})")
host = driver_address()
cfg = load_config(config_file, OFFLINE + where + [
    f"storage.files={files}",
    f"sample.out={local_path(sample_dir)}",
    f"sample.rows={rows}",
    f"ingest.input={join(sample_dir, 'metadata')}",
    # The image server runs on the driver: opt in to exactly that address.
    f"download.fetch.allowed_networks=[{host}/32]",
])
tables = cfg.storage.root or ".".join(p for p in (cfg.storage.catalog, cfg.storage.schema) if p)
print(f"tables: {tables}; sample and files: {files}")

# COMMAND ----------

# MAGIC %md ## Generate the sample and run the pipeline
# MAGIC The images are served from the driver for as long as this cell runs (the sample's
# MAGIC URLs name the server's port); each stage prints its report as it ends.

# COMMAND ----------

import dataclasses

from jobs.demo import serve
from jobs.stages import get_stage

Path(cfg.sample.out).mkdir(parents=True, exist_ok=True)
with serve(Path(cfg.sample.out), host) as base_url:
    cfg = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, base_url=base_url))
    sample = get_stage("sample").run(cfg)
    print(f"sample: {sample.rows} rows in {sample.out}, served at {base_url}: {sample.kinds}")
    reports = get_stage("run").run(spark, cfg)

# COMMAND ----------

# MAGIC %md ## Where every row went
# MAGIC Open `notebooks/explore.py` with the same widgets for the gallery, the OCR boxes and
# MAGIC the what-if.

# COMMAND ----------

from jobs.explore import views
from jobs.explore.spark_source import SparkSource
from jobs.explore.workbench import Workbench

wb = Workbench(SparkSource(spark, cfg), cfg)
links = views.notebook_links(wb.source.image)
displayHTML(f"<style>{views.STYLE}</style><main>"
            f"{views.warning(wb.index.warning)}{views.funnel(wb.funnel(), links)}</main>")
