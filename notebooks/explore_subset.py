# Databricks notebook source
# MAGIC %md
# MAGIC # deparrot: explore the tables
# MAGIC Thin on purpose: the work happens in the jobs (`deparrot <stage>`); this notebook
# MAGIC only reads the tables they wrote. Set the catalog and schema the job used.

# COMMAND ----------
dbutils.widgets.text("catalog", "main")  # noqa: F821 - provided by Databricks
dbutils.widgets.text("schema", "deparrot")  # noqa: F821
catalog = dbutils.widgets.get("catalog")  # noqa: F821
schema = dbutils.widgets.get("schema")  # noqa: F821

# COMMAND ----------
display(spark.sql(f"SELECT family, count(*) AS rows FROM {catalog}.{schema}.metadata GROUP BY family"))  # noqa: E501,F821

# COMMAND ----------
display(spark.sql(f"SELECT stage, reason, count(*) AS rows FROM {catalog}.{schema}.rejects GROUP BY ALL ORDER BY rows DESC"))  # noqa: E501,F821

# COMMAND ----------
# MAGIC %md The debiased subset: rows per k-means cluster and their scores.

# COMMAND ----------
display(spark.sql(f"SELECT kmeans, count(*) AS rows, avg(similarity) AS clip_score, avg(ase_scores) AS aesthetic FROM {catalog}.{schema}.laion_debiased GROUP BY kmeans ORDER BY rows DESC"))  # noqa: E501,F821
