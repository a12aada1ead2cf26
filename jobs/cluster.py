"""`deparrot cluster-train` and `deparrot cluster-assign`.

Train: PCA to 256 dims then faiss k-means on a Spark-drawn sample of ViT-B/32 image
embeddings (the only thing collected to the driver, bounded by cluster.sample_size).
Assign: the PCA matrix and centroids are broadcast once as bytes (not Python objects);
each Python worker builds its faiss index once and labels every row with its nearest
centroid (`kmeans`) and the squared L2 distance to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.config import ClusterConfig, Config
from jobs.errors import UserError
from jobs.lake import Lake
from jobs.stages import Stage

CLUSTERS_SCHEMA = T.StructType([
    T.StructField("sample_id", T.LongType(), False),
    T.StructField("kmeans", T.LongType(), False),
    T.StructField("kmeans_distance", T.FloatType(), True),  # squared L2 in PCA space
    T.StructField("centroids_sha1", T.StringType(), False),  # which artifacts labelled it
])


@dataclass
class TrainReport:
    artifacts: str
    sample_size: int
    k: int
    pca_dim: int


@dataclass
class AssignReport:
    assigned: int
    centroids_sha1: str
    clusters_used: int


def published(cfg: ClusterConfig) -> bool:
    return bool(cfg.published_pca and cfg.published_centroids)


def artifacts_dir(cfg: Config) -> str:
    """Where cluster-train writes and cluster-assign reads: shared storage."""
    return cfg.shared(cfg.cluster.artifacts)


def load(cfg: Config):
    """The artifacts to assign with: the published pair when configured, else ours."""
    from udfs import clustering

    c = cfg.cluster
    try:
        if published(c):
            return clustering.load_published(cfg.shared(c.published_pca),
                                             cfg.shared(c.published_centroids),
                                             trust_pickle=c.trust_pickle)
        folder = artifacts_dir(cfg)
        if not clustering.artifacts_exist(folder):
            raise UserError(
                f"no cluster artifacts in {folder}: run `deparrot cluster-train` first, or "
                "set cluster.published_pca and cluster.published_centroids")
        return clustering.load_artifacts(folder)
    except clustering.ArtifactError as exc:
        raise UserError(str(exc)) from None


def skip_training(spark: SparkSession, cfg: Config) -> str | None:
    """`deparrot run` trains only when neither published nor own artifacts exist."""
    from udfs import clustering

    if published(cfg.cluster):
        return "using the published PCA and centroids"
    if clustering.artifacts_exist(artifacts_dir(cfg)):
        return f"artifacts exist in {artifacts_dir(cfg)}"
    return None


def embedding_model(lake: Lake, cfg: Config) -> str:
    """The CLIP model behind the scores table's embeddings (model:pretrained): what the
    score stage recorded, else what the config says it would use."""
    recorded = lake.properties("scores").get("deparrot.clip_model", "")
    return recorded or f"{cfg.score.clip_model}:{cfg.score.clip_pretrained}"


def check_embedding_model(art, lake: Lake, cfg: Config) -> None:
    from udfs.clustering import same_embedding_model

    built_from = str(art.manifest.get("embedding_model", ""))
    scored_with = embedding_model(lake, cfg)
    if built_from and not same_embedding_model(built_from, scored_with) \
            and not cfg.cluster.allow_other_embedding_model:
        raise UserError(
            f"the cluster artifacts were built from {built_from} embeddings but the scores "
            f"table holds {scored_with} embeddings: run `deparrot cluster-train` on these "
            "scores, use artifacts of that model, or set "
            "cluster.allow_other_embedding_model=true")


def embeddings(lake: Lake) -> DataFrame:
    return lake.read("scores").where(F.col("status") == "ok").select(
        "sample_id", "image_embedding")


def draw_sample(df: DataFrame, size: int, seed: int) -> np.ndarray:
    """A uniform sample of at most `size` embeddings, collected as one float32 matrix.

    The same rows in the same order, run after run, however Spark partitions the input:
    rows are picked by a seeded hash of sample_id (not per-partition random draws) and
    sorted by sample_id, because k-means is seeded but depends on the order of its input.
    """
    total = df.count()
    if total == 0:
        raise UserError("no scored embeddings to train on: run `deparrot score` first")
    fraction = min(1.0, 1.1 * size / total)
    picked = df
    if fraction < 1:
        bucket = F.pmod(F.xxhash64("sample_id", F.lit(seed)), F.lit(1_000_000))
        picked = df.where(bucket < int(fraction * 1_000_000))
    table = picked.orderBy("sample_id").select("image_embedding").limit(size).toArrow()
    return embedding_matrix(table.column(0))


def embedding_matrix(column) -> np.ndarray:
    """The scores' embeddings as an (n, d) float32 matrix from the Arrow buffers."""
    from udfs.arrow_embeddings import embedding_matrix as from_arrow

    try:
        return from_arrow(column)
    except ValueError as exc:
        raise UserError(f"image {exc} in the scores table: re-score with one CLIP model") from None


def train(spark: SparkSession, cfg: Config) -> TrainReport:
    from udfs import clustering

    c = cfg.cluster
    x = draw_sample(embeddings(Lake(spark, cfg)), c.sample_size, c.seed)
    art = clustering.train_artifacts(
        x, pca_dim=c.pca_dim, k=c.k, niter=c.niter, nredo=c.nredo, seed=c.seed,
        min_points_per_centroid=c.min_points_per_centroid,
        max_points_per_centroid=c.max_points_per_centroid,
        use_gpu=None if c.use_gpu else False,
        embedding_model=embedding_model(Lake(spark, cfg), cfg),
    )
    folder = clustering.save_artifacts(art, artifacts_dir(cfg))
    return TrainReport(artifacts=folder, sample_size=len(x), k=art.k, pca_dim=art.pca_dim)


def transform(df: DataFrame, blob, faiss_threads: int) -> DataFrame:
    """(sample_id, image_embedding) -> CLUSTERS_SCHEMA, with `blob` a broadcast of bytes."""
    from udfs.cluster_assign import assign_batches

    def body(batches):
        return assign_batches(batches, blob.value, faiss_threads)

    return df.mapInPandas(body, schema=CLUSTERS_SCHEMA)


def assign(spark: SparkSession, cfg: Config) -> AssignReport:
    from udfs import clustering

    lake = Lake(spark, cfg)
    lake.require("scores", nonempty=True)
    art = load(cfg)
    check_embedding_model(art, lake, cfg)
    lake.ensure("clusters", CLUSTERS_SCHEMA)
    blob = spark.sparkContext.broadcast(clustering.serialize_artifacts(art))
    current = lake.read("clusters", version=lake.version("clusters")).where(
        F.col("centroids_sha1") == art.fingerprint)
    todo = embeddings(lake).join(current.select("sample_id"), "sample_id", "left_anti")
    if todo.limit(1).count():  # an empty MERGE would still commit a new table version
        lake.upsert("clusters", transform(todo, blob, cfg.cluster.faiss_threads),
                    on=["sample_id"])
    blob.unpersist()
    done = lake.read("clusters").where(F.col("centroids_sha1") == art.fingerprint)
    stats = done.agg(F.count("*").alias("n"), F.countDistinct("kmeans").alias("k")).first()
    return AssignReport(assigned=stats["n"], centroids_sha1=art.fingerprint,
                        clusters_used=stats["k"])


STAGES = (
    Stage("cluster-train", "PCA + faiss k-means on a sample of B/32 image embeddings", train,
          pipeline=True, skip=skip_training, gpu=True, reads=("scores",)),
    Stage("cluster-assign", "nearest centroid (kmeans) for every scored row", assign,
          pipeline=True, reads=("scores",), writes=("clusters",)),
)
