"""cluster-assign, dedup and publish through Spark on synthetic scored rows."""

import dataclasses

import joblib
import numpy as np
import pytest
from pyspark.sql import functions as F

from jobs import cluster, dedup, publish
from jobs.download import TABLE_SCHEMA as IMAGES_TABLE
from jobs.ingest import METADATA_SCHEMA
from jobs.lake import Lake
from jobs.score import TABLE_SCHEMA as SCORES_TABLE

DIM = 16


def _unit(v):
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _rows():
    """40 rows: 4 near-duplicate groups of 3, one exact URL pair, one exact image pair,
    rows failing each filter, the rest distinct."""
    rng = np.random.default_rng(0)
    emb = _unit(rng.normal(size=(40, DIM)))
    rows = []
    for i in range(40):
        rows.append(dict(sample_id=100 + i, url=f"http://x.example/{i}", sha=f"h{i}",
                         boxes=0, clip=0.32 + 0.001 * i, aes=5.0, emb=emb[i]))
    for g in range(4):  # rows 4g..4g+2 are near-duplicates of row 4g
        for j in (1, 2):
            rows[4 * g + j]["emb"] = _unit(emb[4 * g] + 0.01 * rng.normal(size=DIM))
    rows[20]["url"] = rows[21]["url"]  # exact URL duplicates: 21 has the higher clip score
    rows[22]["sha"] = rows[23]["sha"]  # same image bytes: 23 wins on clip score
    rows[24]["boxes"] = 2  # text found
    rows[25]["clip"] = 0.3  # not > 0.3
    rows[26]["aes"] = 4.5  # not > 4.5
    rows[27]["clip"] = 0.9  # a near-duplicate of group 0 with the best clip score
    rows[27]["emb"] = _unit(emb[0] + 0.01 * rng.normal(size=DIM))
    return rows


@pytest.fixture
def scored(spark, cfg):
    lake = Lake(spark, cfg)
    for key, schema in (("metadata", METADATA_SCHEMA), ("images", IMAGES_TABLE),
                        ("scores", SCORES_TABLE)):
        lake.ensure(key, schema)
    rows = _rows()
    spark.createDataFrame(
        [(r["sample_id"], r["url"], f"caption {r['sample_id']}", 64.0, 48.0, "?", "UNLIKELY",
          "laion400m", "f", r["sample_id"]) for r in rows],
        "sample_id long, url string, text string, width double, height double, "
        "license string, nsfw string, family string, source_file string, source_row long",
    ).writeTo(lake.ref("metadata").name).append()
    spark.createDataFrame([(r["sample_id"], "ok", r["sha"]) for r in rows],
                          "sample_id long, status string, sha256 string") \
        .writeTo(lake.ref("images").name).append()
    spark.createDataFrame(
        [(r["sample_id"], "ok", r["boxes"], r["clip"], r["aes"], r["emb"].tolist())
         for r in rows],
        "sample_id long, status string, ocr_box_count int, clip_score double, "
        "aesthetic_score double, image_embedding array<float>",
    ).writeTo(lake.ref("scores").name).append()
    c = dataclasses.replace(cfg.cluster, artifacts=str(cfg.storage.root) + "/../clusters",
                            pca_dim=8, k=3, niter=10, nredo=1, min_points_per_centroid=1,
                            max_points_per_centroid=1000, sample_size=1000)
    return dataclasses.replace(cfg, cluster=c, publish=dataclasses.replace(
        cfg.publish, clusters_per_partition=1))


def test_assign_equals_direct_faiss_search(spark, scored):
    import faiss

    from udfs.clustering import load_artifacts

    train = cluster.train(spark, scored)
    assert (train.k, train.pca_dim, train.sample_size) == (3, 8, 40)
    report = cluster.assign(spark, scored)
    assert report.assigned == 40

    art = load_artifacts(scored.cluster.artifacts)
    embs = {r["sample_id"]: r["emb"] for r in _rows()}
    ids = sorted(embs)
    x = art.project(np.stack([embs[i] for i in ids]))
    index = faiss.IndexFlatL2(art.pca_dim)
    index.add(art.centroids)
    dist, labels = index.search(x, 1)
    got = {r["sample_id"]: r for r in Lake(spark, scored).read("clusters").collect()}
    assert [got[i]["kmeans"] for i in ids] == labels[:, 0].tolist()
    np.testing.assert_allclose([got[i]["kmeans_distance"] for i in ids], dist[:, 0],
                               rtol=1e-4, atol=1e-5)
    again = cluster.assign(spark, scored)  # same artifacts: nothing re-labelled or added
    assert again.assigned == 40 and Lake(spark, scored).read("clusters").count() == 40


@pytest.mark.slow  # default: assign equals faiss on trained artifacts
def test_cluster_train_gives_the_same_artifacts_run_after_run(spark, scored, tmp_path):
    from pyspark.sql import functions as F

    from udfs.clustering import load_artifacts

    df = cluster.embeddings(Lake(spark, scored))
    shuffled = df.orderBy(F.rand(1)).repartition(3)  # other partitions, other row order
    for size in (1000, 25):  # all rows, and a hashed sample of them
        np.testing.assert_array_equal(cluster.draw_sample(df, size, 42),
                                      cluster.draw_sample(shuffled, size, 42))
    assert len(cluster.draw_sample(df, 25, 42)) <= 25
    first = dataclasses.replace(scored.cluster, artifacts=str(tmp_path / "a"))
    second = dataclasses.replace(scored.cluster, artifacts=str(tmp_path / "b"))
    cluster.train(spark, dataclasses.replace(scored, cluster=first))
    cluster.train(spark, dataclasses.replace(scored, cluster=second))
    a, b = load_artifacts(first.artifacts), load_artifacts(second.artifacts)
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_dedup_keeps_one_per_group_and_publish_survives_a_crash(spark, scored, monkeypatch):
    cluster.train(spark, scored)
    cluster.assign(spark, scored)
    report = dedup.run(spark, scored)
    lake = Lake(spark, scored)
    rows = {r["sample_id"]: r for r in lake.read("dedup").collect()}
    # Candidates are the rows passing the filters: 40 minus text, low clip, low aesthetic.
    assert report.candidates == 37
    assert rows[121]["kept"] and rows[120]["reason"] == "duplicate_url"
    assert rows[120]["duplicate_of"] == 121
    assert rows[123]["kept"] and rows[122]["reason"] == "duplicate_image"
    # Group 0 (100, 101, 102, 127): 127 has the best clip score and is the one kept.
    assert rows[127]["kept"]
    assert all(rows[i]["reason"] == "near_duplicate" and rows[i]["duplicate_of"] == 127
               for i in (100, 101, 102))
    for g in (1, 2, 3):
        group = [100 + 4 * g + j for j in range(3)]
        assert [rows[i]["kept"] for i in group] == [False, False, True]  # best clip score
    distinct = [i for i in range(100, 140) if i % 4 == 3 and i not in (123, 127)
                and i < 116] + list(range(128, 140))
    assert all(rows[i]["kept"] for i in distinct)  # no distinct row dropped
    assert dedup.run(spark, scored).skipped  # same inputs: nothing to redo

    # Publish, crashing after the first partition commit.
    real = publish.write_partition
    calls = []

    def crash_after_one(*args, **kwargs):
        if calls:
            raise RuntimeError("simulated crash")
        calls.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(publish, "write_partition", crash_after_one)
    with pytest.raises(RuntimeError, match="simulated crash"):
        publish.run(spark, scored)
    first = lake.read("subset").collect()
    assert len(first) > 0  # the finished partition survived
    monkeypatch.setattr(publish, "write_partition", real)
    resumed = publish.run(spark, scored)
    assert resumed.partitions_written == resumed.partitions - 1  # the done one is skipped
    table = sorted(tuple(r) for r in lake.read("subset").collect())

    # A clean run in another schema gives the same table.
    clean = dataclasses.replace(
        scored, storage=dataclasses.replace(scored.storage, schema=scored.storage.schema + "_c"))
    publish.run(spark, clean)
    assert sorted(tuple(r) for r in Lake(spark, clean).read("subset").collect()) == table

    # The subset: dataset card columns and types, the accounting, SQL by name.
    subset = lake.read("subset")
    assert [(f.name, f.dataType.simpleString()) for f in subset.schema.fields] == [
        ("SAMPLE_ID", "bigint"), ("URL", "string"), ("TEXT", "string"), ("HEIGHT", "double"),
        ("WIDTH", "double"), ("LICENSE", "string"), ("NSFW", "string"),
        ("similarity", "double"), ("ase_scores", "double"), ("kmeans", "bigint"),
        ("part", "int")]
    kept = {r["SAMPLE_ID"] for r in subset.collect()}
    rejected = {r["sample_id"]: r["reason"] for r in
                lake.read("rejects").where(F.col("stage") == "publish").collect()}
    assert kept.isdisjoint(rejected) and len(kept) + len(rejected) == 40
    assert (rejected[124], rejected[125], rejected[126]) == (
        "text_found", "low_clip_score", "low_aesthetic")
    assert kept == {i for i, r in rows.items() if r["kept"]}
    name = lake.ref("subset").name
    assert spark.sql(f"SELECT count(*) AS n FROM {name}").first()["n"] == len(kept)


def test_published_joblib_pca_needs_the_trust_flag(scored, tmp_path):
    from sklearn.decomposition import IncrementalPCA

    x = np.random.default_rng(1).normal(size=(64, DIM)).astype(np.float32)
    pca = IncrementalPCA(n_components=8).fit(x)
    joblib.dump(pca, tmp_path / "pca.joblib")
    np.save(tmp_path / "centroids.npy", np.zeros((3, 8), dtype=np.float32))
    c = dataclasses.replace(scored.cluster, published_pca=str(tmp_path / "pca.joblib"),
                            published_centroids=str(tmp_path / "centroids.npy"))
    with pytest.raises(Exception, match="cluster.trust_pickle"):
        cluster.load(dataclasses.replace(scored, cluster=c))
    art = cluster.load(dataclasses.replace(
        scored, cluster=dataclasses.replace(c, trust_pickle=True)))
    np.testing.assert_allclose(art.project(x), pca.transform(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # a guard; default: assign equals faiss
def test_assign_refuses_embeddings_of_another_model(spark, scored):
    from jobs.errors import UserError

    cluster.train(spark, scored)  # artifacts of ViT-B-32:openai (the config's model)
    lake = Lake(spark, scored)
    lake.set_properties("scores", {"deparrot.clip_model": "ViT-L-14:openai"})
    with pytest.raises(UserError, match="built from ViT-B-32:openai embeddings but the "
                                        "scores table holds ViT-L-14:openai"):
        cluster.assign(spark, scored)
    assert not lake.exists("clusters") or lake.read("clusters").count() == 0
    override = dataclasses.replace(scored, cluster=dataclasses.replace(
        scored.cluster, allow_other_embedding_model=True))
    assert cluster.assign(spark, override).assigned == 40


def _clustered_frame(spark, seed=3):
    """Cluster 0: 600 rows = 100 tight triples + 300 distinct; cluster 1: 50 rows with 5
    triples (stays under any cap used below)."""
    rng = np.random.default_rng(seed)
    rows, planted = [], []
    sid = 0
    for kmeans, triples, distinct in ((0, 100, 300), (1, 5, 35)):
        for _ in range(triples):
            centre = rng.normal(size=DIM)
            group = []
            for _ in range(3):
                rows.append((sid, f"u{sid}", f"h{sid}", kmeans, float(rng.uniform(0.31, 0.5)),
                             _unit(centre + 0.01 * rng.normal(size=DIM)).tolist()))
                group.append(sid)
                sid += 1
            planted.append(group)
        for _ in range(distinct):
            rows.append((sid, f"u{sid}", f"h{sid}", kmeans, float(rng.uniform(0.31, 0.5)),
                         _unit(rng.normal(size=DIM)).tolist()))
            sid += 1
    df = spark.createDataFrame(rows, "sample_id long, url string, image_sha256 string, "
                                     "kmeans long, clip_score double, "
                                     "image_embedding array<float>")
    return df, rows, planted


def _exact_keepers(rows, cluster, recipe):
    from udfs.dedup import find_near_duplicates

    mine = [r for r in rows if r[3] == cluster]
    res = find_near_duplicates(np.array([r[0] for r in mine]), np.array([r[5] for r in mine]),
                               np.array([r[4] for r in mine]),
                               threshold=recipe.dedup_threshold)
    return {r[0]: int(k) for r, k in zip(mine, res.keeper_ids, strict=True)}


@pytest.mark.slow  # default: exact dedup within clusters (the crash test)
def test_dedup_splits_clusters_over_the_cap_and_stays_exact_below_it(spark, cfg):
    df, rows, planted = _clustered_frame(spark)
    exact = {**_exact_keepers(rows, 0, cfg.recipe), **_exact_keepers(rows, 1, cfg.recipe)}

    def keepers(cap):
        recipe = dataclasses.replace(cfg.recipe, dedup_max_cluster_rows=cap)
        groups = dedup.transform(df, recipe)
        out = {r["sample_id"]: (r["duplicate_of"] if r["duplicate_of"] is not None
                                else r["sample_id"]) for r in groups.rows.collect()}
        return out, groups

    # Every cluster under the cap: exactly today's exact search, nothing split.
    whole, groups = keepers(1000)
    assert groups.split_clusters == 0 and groups.largest == 600
    assert whole == exact

    # Cap 100: cluster 0 (600 rows) is split; no task sees more than ~the cap.
    split, groups = keepers(100)
    assert groups.split_clusters == 1
    assert groups.largest <= 150
    assert len(split) == len(rows)  # every row accounted for once
    small = [r[0] for r in rows if r[3] == 1]
    assert {i: split[i] for i in small} == {i: exact[i] for i in small}  # untouched
    # Planted triples: the split finds nearly all of them (a border may cut one or two).
    found = sum(len({split[i] for i in g}) == 1 for g in planted)
    assert found >= 0.95 * len(planted)
    # It never links rows the exact search keeps apart.
    distinct_exact = {i for i in exact if exact[i] == i}
    assert {i for i in split if split[i] == i} >= distinct_exact
    # Deterministic: the same input gives the same split.
    assert keepers(100)[0] == split
