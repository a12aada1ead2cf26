"""`deparrot dedup`: exact duplicates by URL and image hash, near-duplicates per cluster.

Among the rows that pass the recipe filters, each duplicate group keeps one row: the
highest CLIP score, ties broken by the smallest sample id (independent of input order).
Near-duplicates are connected components of "cosine of ViT-B/32 image embeddings >=
recipe.dedup_threshold" inside one k-means cluster, found block by block so memory
stays bounded for clusters far bigger than an N x N matrix allows (udfs.dedup). A cluster
over `recipe.dedup_max_cluster_rows` is first split into sub-clusters (udfs.subclusters),
so no task holds or compares more than about that many rows: work stays linear in rows.
The dedup table is rewritten whole in one commit, so a re-run replaces, never adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import Config, RecipeConfig
from jobs.lake import Lake, tally
from jobs.recipe import candidates
from jobs.stages import Stage

DEDUP_SCHEMA = T.StructType([
    T.StructField("sample_id", T.LongType(), False),
    T.StructField("kept", T.BooleanType(), False),
    # duplicate_url | duplicate_image | near_duplicate; null when kept
    T.StructField("reason", T.StringType(), True),
    T.StructField("duplicate_of", T.LongType(), True),  # the keeper of its group
    T.StructField("group_size", T.IntegerType(), True),
    T.StructField("max_sim", T.FloatType(), True),  # best cosine to another group member
])


@dataclass
class DedupReport:
    skipped: bool = False
    candidates: int = 0
    kept: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    split_clusters: int = 0  # clusters over the size cap, split into sub-clusters
    largest_group: int = 0  # rows of the biggest group one task deduplicated


def _exact(df: DataFrame, key: str, reason: str) -> tuple[DataFrame, DataFrame]:
    """Split into (survivors, duplicates of an earlier keeper by `key`)."""
    order = Window.partitionBy(key).orderBy(F.desc_nulls_last("clip_score"), "sample_id")
    marked = df.withColumn("_keeper", F.first("sample_id").over(order)).withColumn(
        "_size", F.count("*").over(Window.partitionBy(key)))
    keyed = F.col(key).isNotNull()
    dups = marked.where(keyed & (F.col("_keeper") != F.col("sample_id"))).select(
        "sample_id", F.lit(False).alias("kept"), F.lit(reason).alias("reason"),
        F.col("_keeper").alias("duplicate_of"), F.col("_size").cast("int").alias("group_size"),
        F.lit(None).cast("float").alias("max_sim"))
    survivors = marked.where(~keyed | (F.col("_keeper") == F.col("sample_id"))).drop(
        "_keeper", "_size")
    return survivors, dups


MAX_SPLIT_LEVELS = 3  # a sub-cluster still over the cap is split again, this many times


@dataclass
class Groups:
    """Near-duplicate search groups: `_group` per row, and what splitting did."""

    rows: DataFrame
    split_clusters: int = 0
    largest: int = 0


def _sub_assigner(plan: dict[int, tuple[int, np.ndarray]]):
    """mapInArrow body: rows of a planned group move to `base + nearest sub-centroid`."""

    def body(batches):
        import pyarrow as pa

        from udfs.arrow_embeddings import embedding_matrix
        from udfs.subclusters import nearest

        planned = np.fromiter(plan, dtype=np.int64, count=len(plan))
        for batch in batches:
            group = batch.column("_group").to_numpy(zero_copy_only=False).astype(np.int64)
            moved = group.copy()
            embeddings = batch.column("image_embedding")
            for g in np.unique(group[np.isin(group, planned)]):
                rows = np.flatnonzero(group == g)
                picked = embeddings.take(pa.array(rows))
                valid = np.asarray(picked.is_valid())
                base, centroids = plan[int(g)]
                moved[rows] = base  # a row without an embedding has nothing to compare
                if valid.any():
                    x = embedding_matrix(picked.filter(pa.array(valid)))
                    moved[rows[valid]] = base + nearest(x, centroids)
            index = batch.schema.get_field_index("_group")
            yield batch.set_column(index, "_group", pa.array(moved, pa.int64()))

    return body


def _train_sub(parts: dict[int, int], seed: int):
    """applyInPandas body over one group's sample: its sub-centroids, one row each."""

    def body(pdf):
        import pandas as pd

        from udfs.dedup import embeddings_from_column
        from udfs.subclusters import train_subcentroids

        pdf = pdf[pdf["image_embedding"].notna()]
        if pdf.empty:
            return pd.DataFrame({"_group": [], "sub": [], "centroid": []})
        g = int(pdf["_group"].iloc[0])
        c = train_subcentroids(pdf["sample_id"].to_numpy(np.int64),
                               embeddings_from_column(pdf["image_embedding"]), parts[g], seed)
        return pd.DataFrame({"_group": np.full(len(c), g, np.int64),
                             "sub": np.arange(len(c), dtype=np.int32), "centroid": list(c)})

    return body


def bounded_groups(rest: DataFrame, cap: int) -> Groups:
    """`rest` with a `_group` column: its k-means cluster, or a sub-cluster of it when the
    cluster has more than `cap` rows. `rest` is read once per level: persist it."""
    from udfs.subclusters import parts_for, sample_fraction

    rows = rest.withColumn("_group", F.col("kmeans").cast("long"))
    out = Groups(rows)
    for level in range(1, MAX_SPLIT_LEVELS + 1):
        sizes = {r["_group"]: r["count"] for r in rows.groupBy("_group").count().collect()}
        out.largest = max(sizes.values(), default=0)
        big = sorted(g for g, n in sizes.items() if n > cap)
        if not big:
            break
        parts = {g: parts_for(sizes[g], cap) for g in big}
        fraction = F.create_map(*[x for g in big for x in (F.lit(g), F.lit(
            sample_fraction(sizes[g], parts[g])))])
        in_big = F.col("_group").isin(big)
        draw = F.pmod(F.xxhash64("sample_id", F.lit(level)), F.lit(1_000_000)) / 1_000_000.0
        sample = rows.where(in_big & (draw < fraction[F.col("_group")])).select(
            "_group", "sample_id", "image_embedding")
        trained = sample.groupBy("_group").applyInPandas(
            _train_sub(parts, seed=level),
            schema="_group long, sub int, centroid array<float>").collect()
        centroids: dict[int, list] = {}
        for r in sorted(trained, key=lambda r: (r["_group"], r["sub"])):
            centroids.setdefault(r["_group"], []).append(r["centroid"])
        base = max(sizes) + 1
        plan = {}
        for g in big:
            if g in centroids:
                plan[g] = (base, np.asarray(centroids[g], np.float32))
                base += len(centroids[g])
        if level == 1:
            out.split_clusters = len(plan)
        rows = rows.mapInArrow(_sub_assigner(plan), schema=rows.schema)
    out.rows = rows
    return out


def transform(cands: DataFrame, recipe: RecipeConfig) -> Groups:
    """Candidates (sample_id, url, image_sha256, kmeans, clip_score, image_embedding) rows
    -> DEDUP_SCHEMA rows (in `.rows`)."""
    from udfs.dedup import dedup_frame

    rest = cands.select("sample_id", "url", "image_sha256", "kmeans", "clip_score",
                       "image_embedding")
    removed = []
    if recipe.dedup_by_url:
        rest, dups = _exact(rest, "url", "duplicate_url")
        removed.append(dups)
    if recipe.dedup_by_image_hash:
        rest, dups = _exact(rest, "image_sha256", "duplicate_image")
        removed.append(dups)
    threshold, block = recipe.dedup_threshold, recipe.dedup_block_size

    def per_cluster(pdf):
        out = dedup_frame(pdf, id_col="sample_id", emb_col="image_embedding",
                          score_col="clip_score", threshold=threshold, block_size=block)
        return out.astype({"group_size": "int32", "max_sim": "float32"})

    groups = bounded_groups(rest.select("sample_id", "kmeans", "clip_score", "image_embedding"),
                            recipe.dedup_max_cluster_rows)
    near = groups.rows.groupBy("_group").applyInPandas(
        per_cluster, schema="sample_id long, keeper_id long, group_size int, max_sim float")
    kept = F.col("keeper_id") == F.col("sample_id")
    result = near.select(
        "sample_id", kept.alias("kept"),
        F.when(~kept, F.lit("near_duplicate")).alias("reason"),
        F.when(~kept, F.col("keeper_id")).alias("duplicate_of"), "group_size",
        F.when(F.col("group_size") > 1, F.col("max_sim")).alias("max_sim"))
    for dups in removed:
        result = result.unionByName(dups)
    groups.rows = result
    return groups


def inputs_signature(lake: Lake, recipe: RecipeConfig) -> str:
    return lake.signature(("metadata", "images", "scores", "clusters"), recipe=recipe)


def run(spark: SparkSession, cfg: Config, force: bool = False) -> DedupReport:
    """Rewrite the dedup table, unless it already reflects these inputs and settings."""
    lake = Lake(spark, cfg)
    for upstream in ("metadata", "images", "scores", "clusters"):
        lake.require(upstream)
    lake.ensure("dedup", DEDUP_SCHEMA)
    sig = inputs_signature(lake, cfg.recipe)
    report = DedupReport()
    if not force and lake.properties("dedup").get("deparrot.inputs") == sig:
        report.skipped = True
    else:
        # Read once: splitting reads the candidates once per level, then dedup does.
        cands = candidates(lake, cfg.recipe).select(
            "sample_id", "url", "image_sha256", "kmeans", "clip_score", "image_embedding"
        ).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            groups = transform(cands, cfg.recipe)
            conformed = groups.rows.select(*[F.col(f.name).cast(f.dataType)
                                             for f in DEDUP_SCHEMA.fields])
            conformed.writeTo(lake.ref("dedup").name).overwrite(F.lit(True))
        finally:
            cands.unpersist()
        report.split_clusters, report.largest_group = groups.split_clusters, groups.largest
        lake.set_properties("dedup", {"deparrot.inputs": sig,
                                      "deparrot.split_clusters": str(groups.split_clusters),
                                      "deparrot.largest_group": str(groups.largest)})
    for (kept, reason), count in tally(lake.read("dedup"), "kept", "reason").items():
        report.candidates += count
        if kept:
            report.kept += count
        else:
            report.removed[reason] = count
    return report


STAGES = (Stage("dedup", "exact and near-duplicate removal within clusters", run,
                pipeline=True,
                reads=("metadata", "images", "scores", "clusters"), writes=("dedup",)),)
