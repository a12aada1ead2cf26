import dataclasses

from jobs.recipe import filter_reason


def _reasons(spark, recipe, rows):
    df = spark.createDataFrame(
        rows, "sample_id long, has_text boolean, ocr_box_count int, clip_score double, "
              "aesthetic_score double")
    got = df.select("sample_id", filter_reason(recipe).alias("reason")).collect()
    return {r["sample_id"]: r["reason"] for r in got}


def test_text_found_follows_has_text_not_box_count(spark, cfg):
    rows = [
        (1, True, 2, 0.5, 6.0),   # text read: rejected
        (2, False, 3, 0.5, 6.0),  # boxes read as nothing / punctuation: kept
        (3, False, 0, 0.5, 6.0),
        (4, None, 1, 0.5, 6.0),   # a row written before has_text: any box is text
        (5, None, 0, 0.5, 6.0),
        (6, False, 2, 0.2, 6.0),  # no text, but a low CLIP score
    ]
    assert _reasons(spark, cfg.recipe, rows) == {
        1: "text_found", 2: None, 3: None, 4: "text_found", 5: None, 6: "low_clip_score"}


def test_max_text_boxes_tolerates_a_few_boxes_with_text(spark, cfg):
    recipe = dataclasses.replace(cfg.recipe, max_text_boxes=2)
    rows = [(1, True, 2, 0.5, 6.0), (2, True, 3, 0.5, 6.0), (3, False, 5, 0.5, 6.0)]
    assert _reasons(spark, recipe, rows) == {1: None, 2: "text_found", 3: None}
