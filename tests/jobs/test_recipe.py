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


def _policy_reasons(spark, recipe, rows, policy=None):
    """(sample_id, caption, ocr_text, has_text, boxes, clip, masked, aesthetic) rows ->
    reason per id under `policy` (default recipe.text_policy)."""
    df = spark.createDataFrame(
        rows, "sample_id long, text string, ocr_text string, has_text boolean, "
              "ocr_box_count int, clip_score double, masked_clip_score double, "
              "aesthetic_score double")
    got = df.select("sample_id", filter_reason(recipe, policy).alias("reason")).collect()
    return {r["sample_id"]: r["reason"] for r in got}


# A photo with a small sign described by its caption, a poster captioned with its text,
# a text-free photo, and a text image the score stage did not mask (an old table).
PHOTO_SIGN = (1, "a red car parked on a street", "EXIT 7", True, 1, 0.34, 0.33, 6.0)
POSTER = (2, "GRAND OPENING today!", "GRAND OPENING", True, 3, 0.40, 0.12, 6.0)
PLAIN = (3, "a forest path in autumn", "", False, 0, 0.35, 0.35, 6.0)
UNMASKED = (4, "a shop front", "OPEN", True, 1, 0.35, None, 6.0)


def test_default_policy_is_the_papers_any_text(spark, cfg):
    assert cfg.recipe.text_policy == "any_text"
    rows = [PHOTO_SIGN, POSTER, PLAIN, UNMASKED]
    assert _policy_reasons(spark, cfg.recipe, rows) == {
        1: "text_found", 2: "text_found", 3: None, 4: "text_found"}


def test_tmars_keeps_a_photo_with_a_sign_and_drops_a_text_poster(spark, cfg):
    recipe = dataclasses.replace(cfg.recipe, text_policy="tmars")
    low_clip = (5, "a blurry photo", "STOP", True, 1, 0.25, 0.31, 6.0)  # masked ok, clip not
    at_threshold = (6, "a bus", "BUS 12", True, 1, 0.32, 0.30, 6.0)  # >= 0.3 is kept
    got = _policy_reasons(spark, recipe, [PHOTO_SIGN, POSTER, PLAIN, UNMASKED, low_clip,
                                          at_threshold])
    assert got == {1: None, 2: "text_dominant", 3: None, 4: "no_masked_clip_score",
                   5: "low_clip_score", 6: None}
    strict = dataclasses.replace(recipe, min_masked_clip_score=0.335)
    assert _policy_reasons(spark, strict, [PHOTO_SIGN])[1] == "text_dominant"


def test_parrots_drops_only_captions_that_repeat_the_image_text(spark, cfg):
    recipe = dataclasses.replace(cfg.recipe, text_policy="parrots")
    rows = [
        PHOTO_SIGN, POSTER, PLAIN, UNMASKED,
        (5, "Best coffee in town", "BEST COFFEE!", True, 2, 0.4, 0.1, 6.0),  # case, punctuation
        (6, "the exit", "EXIT", False, 1, 0.4, 0.4, 6.0),  # boxes read as no text: no text
        (7, "one two three four", "FOUR", True, 1, 0.4, 0.1, 6.0),  # CoTR 0.25
    ]
    assert _policy_reasons(spark, recipe, rows) == {
        1: None, 2: "parrot_caption", 3: None, 4: None, 5: "parrot_caption", 6: None,
        7: "parrot_caption"}
    tolerant = dataclasses.replace(recipe, max_cotr=0.3)  # up to 30% of the caption's words
    got = _policy_reasons(spark, tolerant, rows)
    assert (got[2], got[5], got[7]) == ("parrot_caption", "parrot_caption", None)
    # The policy argument overrides the configured one (analyze's policy_counts).
    assert _policy_reasons(spark, recipe, rows, "any_text")[1] == "text_found"
