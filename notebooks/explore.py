# Databricks notebook source
# MAGIC %md
# MAGIC # deparrot: explore a finished run
# MAGIC The curator's workbench (`deparrot explore`, jobs/explore/) inside a notebook: the
# MAGIC same `Workbench` and the same views, fed by this notebook's Spark session
# MAGIC (`SparkSource`), so managed Unity Catalog tables work as well as path tables.
# MAGIC
# MAGIC 1. the funnel: every input row, kept, rejected with its stage and reason, or pending;
# MAGIC 2. a gallery of rows with text in the image, and a few of them in detail with the
# MAGIC    OCR boxes drawn over the image;
# MAGIC 3. a what-if: move the recipe's five knobs (widgets at the top) and see what publish
# MAGIC    would keep, with the exact `--set` line that publishes it;
# MAGIC 4. the tables' own counts in SQL.
# MAGIC
# MAGIC **Reviews cannot be written from here**: the workbench appends reviews to a Delta
# MAGIC path table with delta-rs, and a Spark source has no such path. Review rows with
# MAGIC `deparrot explore` on a lake of path tables.
# MAGIC
# MAGIC Set the config file (relative to the repository root, or an absolute path) and
# MAGIC where the tables are: `catalog` and `schema` for managed tables, or `storage_root`
# MAGIC for path tables under a folder (leave it empty for managed tables).

# COMMAND ----------

# MAGIC %pip install -q "..[explore]"

# COMMAND ----------

# ruff: noqa: F821, E402 - the notebook's globals (spark, dbutils, display...); imports
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
dbutils.widgets.text("catalog", "main", "catalog")
dbutils.widgets.text("schema", "deparrot", "schema")
dbutils.widgets.text("storage_root", "", "storage root (empty: managed tables)")

# COMMAND ----------

from jobs.config import TEXT_POLICIES, load_config
from jobs.explore import views
from jobs.explore.decisions import GalleryFilters, WhatIf
from jobs.explore.spark_source import SparkSource
from jobs.explore.workbench import Workbench

config_path = dbutils.widgets.get("config").strip()
cfg = load_config(config_path if Path(config_path).is_absolute() else ROOT / config_path, [
    f"storage.catalog={dbutils.widgets.get('catalog').strip()}",
    f"storage.schema={dbutils.widgets.get('schema').strip()}",
    f"storage.root={dbutils.widgets.get('storage_root').strip()}",
])
source = SparkSource(spark, cfg)
wb = Workbench(source, cfg)
links = views.notebook_links(source.image)


def show(body: str) -> None:
    """A view in the workbench's own style (no page chrome: a cell has no navigation)."""
    displayHTML(f"<style>{views.STYLE}</style><main>{body}</main>")


print(f"{wb.decisions.n_rows} rows read {source.lake.location()} "
      f"in {wb.start_seconds:.1f} s")

# COMMAND ----------

# MAGIC %md ## The funnel
# MAGIC Every input row ends kept, rejected (stage and reason) or pending; the parts add up.

# COMMAND ----------

show(views.warning(wb.index.warning) + views.funnel(wb.funnel(), links))

# COMMAND ----------

# MAGIC %md ## Rows with text in the image
# MAGIC The rows whose OCR found more boxes than `recipe.max_text_boxes`, then a few of
# MAGIC them in detail: the OCR boxes drawn over the image, the caption's words that the
# MAGIC image also shows marked, and the decision under every text policy.

# COMMAND ----------

texts = wb.gallery(GalleryFilters(has_text=True), per_page=12)
source.images(r["sample_id"] for r in texts["rows"] if r["has_image"])
show(views.gallery(texts, links, title="Rows with text in the image"))

# COMMAND ----------

DETAILS = 3
for row in [r for r in texts["rows"] if r["has_image"]][:DETAILS]:
    show(views.detail(wb.detail(row["sample_id"]), links, wb.index.warning))

# COMMAND ----------

# MAGIC %md ## What if the recipe changed?
# MAGIC Set the five knobs in the widgets (they start at the config's values) and run this
# MAGIC cell: the counts are what `deparrot publish` would give on these tables, and the
# MAGIC line under them publishes exactly that subset.

# COMMAND ----------

now = wb.configured()
dbutils.widgets.text("min_clip_score", str(now.min_clip_score), "min_clip_score")
dbutils.widgets.text("min_aesthetic", str(now.min_aesthetic), "min_aesthetic")
dbutils.widgets.dropdown("text_policy", now.text_policy, list(TEXT_POLICIES),
                         "text_policy")
dbutils.widgets.text("max_cotr", str(now.max_cotr), "max_cotr")
dbutils.widgets.text("min_masked_clip_score", str(now.min_masked_clip_score),
                     "min_masked_clip_score")

what = WhatIf(
    min_clip_score=float(dbutils.widgets.get("min_clip_score")),
    min_aesthetic=float(dbutils.widgets.get("min_aesthetic")),
    text_policy=dbutils.widgets.get("text_policy"),
    max_cotr=float(dbutils.widgets.get("max_cotr")),
    min_masked_clip_score=float(dbutils.widgets.get("min_masked_clip_score")),
)
result = wb.whatif(what)
flips = result["flip_in"]["rows"] + result["flip_out"]["rows"]
source.images(x["sample_id"] for x in flips)
show(views.whatif_result(result, links, config_path))
print(f"deparrot publish --config {config_path} {result['set_line']}")

# COMMAND ----------

# MAGIC %md ## The tables in SQL
# MAGIC Rows per input family, rejects per stage and reason, and the subset per k-means
# MAGIC cluster with its mean scores.

# COMMAND ----------

metadata, rejects = source.lake.register("metadata").name, source.lake.register("rejects").name
display(spark.sql(f"SELECT family, count(*) AS rows FROM {metadata} GROUP BY family"))

# COMMAND ----------

display(spark.sql(f"SELECT stage, reason, count(*) AS rows FROM {rejects} "
                  "GROUP BY ALL ORDER BY rows DESC"))

# COMMAND ----------

subset = source.lake.register("subset").name
display(spark.sql(f"SELECT kmeans, count(*) AS rows, avg(similarity) AS clip_score, "
                  f"avg(ase_scores) AS aesthetic FROM {subset} "
                  "GROUP BY kmeans ORDER BY rows DESC"))
