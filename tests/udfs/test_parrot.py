"""Parrot measures against hand-computed values (the expected numbers are worked out by hand)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from udfs.parrot import (
    PARROT_SCHEMA_DDL,
    ParrotSettings,
    cotr,
    fuzzy_cotr,
    measure,
    ngrams,
    parrot_batches,
    words_exact,
    words_normalised,
)

CAPTION = "Buy the BEST coffee, today"


def test_exact_cotr_is_algorithm_1_case_and_punctuation_sensitive():
    # cap = {Buy, the, BEST, "coffee,", today} (5), ocr = {BEST, coffee}: only BEST is shared,
    # "coffee," != "coffee" -> 1/5.
    assert words_exact(CAPTION) == {"Buy", "the", "BEST", "coffee,", "today"}
    assert cotr(words_exact(CAPTION), words_exact("BEST coffee")) == pytest.approx(0.2)
    # lower-case OCR shares nothing exactly
    assert cotr(words_exact(CAPTION), words_exact("best coffee")) == 0.0


def test_normalised_cotr_folds_case_and_strips_edge_punctuation():
    # {buy, the, best, coffee, today} & {best, coffee} -> 2/5
    m = measure(CAPTION, "BEST coffee", True)
    assert m["cotr"] == pytest.approx(0.2)
    assert m["cotr_norm"] == pytest.approx(0.4)
    assert m["cotr_fuzzy"] == pytest.approx(0.4)
    assert m["parrots"] is True
    assert m["ocr_type"] == "co_emb"
    assert m["co_emb_words"] == ["best", "coffee"]
    assert m["cap_word_count"] == 5 and m["ocr_word_count"] == 2


@pytest.mark.parametrize(
    ("ocr", "exact"), [("BEST C0FFEE", 0.2), ("best cofee", 0.0), ("BEST coffees", 0.2)]
)
def test_fuzzy_matches_one_ocr_misread(ocr, exact):
    # normalised: only "best" is equal -> 1/5; fuzzy: coffee ~ misread (distance 1) -> 2/5;
    # exact: "BEST" matches only when the OCR kept its case
    m = measure(CAPTION, ocr, True)
    assert m["cotr"] == pytest.approx(exact)
    assert m["cotr_norm"] == pytest.approx(0.2)
    assert m["cotr_fuzzy"] == pytest.approx(0.4)
    assert m["co_emb_words"] == ["best"]


def test_fuzzy_distance_two_needs_a_larger_setting():
    # "coffee" vs "cofe": two deletions
    assert fuzzy_cotr(["coffee"], ["cofe"]) == 0.0
    assert fuzzy_cotr(["coffee"], ["cofe"], ParrotSettings(fuzzy_max_distance=2)) == 1.0


def test_short_words_must_match_exactly():
    # "a"~"i" and "cat"~"car" are distance 1 but shorter than 4: no fuzzy match.
    # caption {a, cat, on, sofa}; OCR {i, car, on, sofas}: on exact, sofa~sofas fuzzy -> 2/4
    cap = words_normalised("A cat on sofa")
    ocr = words_normalised("I car on sofas")
    assert fuzzy_cotr(cap, ocr) == pytest.approx(0.5)
    assert cotr(set(cap), set(ocr)) == pytest.approx(0.25)
    # lowering the minimum length lets "cat"~"car" match: {cat, on, sofa} -> 3/4
    assert fuzzy_cotr(cap, ocr, ParrotSettings(fuzzy_min_length=3)) == pytest.approx(0.75)
    # the short OCR word must be long enough too: "cafe" vs "caf" is not matched
    assert fuzzy_cotr(["cafe"], ["caf"]) == 0.0


def test_duplicate_caption_words_count_once():
    # exact cap {sale, SALE, big} (3), OCR {SALE}: 1/3; normalised cap {sale, big}: 1/2
    m = measure("sale SALE sale big", "SALE", True)
    assert m["cotr"] == pytest.approx(1 / 3)
    assert m["cotr_norm"] == pytest.approx(0.5)
    assert m["cap_word_count"] == 3


def test_empty_caption_and_missing_ocr():
    assert cotr(set(), {"x"}) == 0.0
    assert fuzzy_cotr([], ["coffee"]) == 0.0
    for caption in ("", "   ", None):
        m = measure(caption, "BEST coffee", True)
        assert (m["cotr"], m["cotr_norm"], m["cotr_fuzzy"]) == (0.0, 0.0, 0.0)
        assert m["cap_word_count"] == 0 and m["parrots"] is False
        assert m["ocr_type"] == "text_no_overlap"
    m = measure(CAPTION, None, None)
    assert m["ocr_type"] == "no_text" and m["ocr_word_count"] == 0 and m["cotr"] == 0.0


def test_three_ocr_types():
    assert measure(CAPTION, "", False)["ocr_type"] == "no_text"
    assert measure(CAPTION, "OPEN 24 HOURS", True)["ocr_type"] == "text_no_overlap"
    assert measure(CAPTION, "coffee", True)["ocr_type"] == "co_emb"
    # detected but unreadable text still counts as text (the recipe rejects the image)
    assert measure(CAPTION, "", True)["ocr_type"] == "text_no_overlap"
    # unknown has_text: inferred from OCR words ("..." has none)
    assert measure(CAPTION, "...", None)["ocr_type"] == "no_text"
    assert measure(CAPTION, "Today!", None)["ocr_type"] == "co_emb"
    # has_text False wins over stray OCR text: no overlap is reported
    m = measure(CAPTION, "BEST coffee", False)
    assert m["ocr_type"] == "no_text" and m["cotr"] == 0.0 and m["co_emb_words"] == []


def test_unicode_punctuation_and_width():
    assert words_normalised("«Café» — „Ｇｏｏｄ“ U.S.A. don't ... ¿Qué? $5 #1 c++") == [
        "café",
        "good",
        "u.s.a",
        "don't",
        "qué",
        "$5",
        "1",
        "c++",
    ]
    # decomposed e + combining acute equals the composed é after NFKC
    assert words_normalised("Cafe\u0301!") == ["café"]
    # caption {café, paris}, OCR {café}: 1/2; exactly, "«Café»" != "CAFÉ" -> 0
    m = measure("«Café» Paris", "CAFÉ", True)
    assert m["cotr"] == 0.0 and m["cotr_norm"] == pytest.approx(0.5)
    assert m["parrots"] is False and m["ocr_type"] == "co_emb"


def test_ngrams():
    words = words_normalised("The best, coffee in town.")
    assert ngrams(words, 1) == ["the", "best", "coffee", "in", "town"]
    assert ngrams(words, 2) == ["the best", "best coffee", "coffee in", "in town"]
    assert ngrams(["one"], 2) == []


def test_settings_are_validated():
    with pytest.raises(ValueError):
        ParrotSettings(fuzzy_max_distance=-1)
    with pytest.raises(ValueError):
        ParrotSettings(fuzzy_min_length=0)
    assert dataclasses.asdict(ParrotSettings()) == {"fuzzy_max_distance": 1, "fuzzy_min_length": 4}


def test_parrot_batches_handles_none_and_keeps_schema():
    df = pd.DataFrame(
        {
            "sample_id": pd.Series([10, 11, 12, 13], dtype="int64"),
            "text": [CAPTION, None, "Sale today", "plain photo"],
            "ocr_text": ["BEST coffee", "OPEN", None, "STOP"],
            "has_text": [True, None, None, False],
        }
    )
    empty = df.iloc[:0]
    out = list(parrot_batches(iter([df, empty]), ParrotSettings()))
    assert len(out) == 2
    got, none = out
    names = [part.split()[0] for part in PARROT_SCHEMA_DDL.split(", ")]
    assert list(got.columns) == names and list(none.columns) == names
    assert len(none) == 0
    assert got["sample_id"].tolist() == [10, 11, 12, 13]
    assert got["cotr"].tolist() == pytest.approx([0.2, 0.0, 0.0, 0.0])
    assert got["cotr_norm"].tolist() == pytest.approx([0.4, 0.0, 0.0, 0.0])
    assert got["parrots"].tolist() == [True, False, False, False]
    assert got["ocr_type"].tolist() == ["co_emb", "text_no_overlap", "no_text", "no_text"]
    assert got["co_emb_words"].tolist() == [["best", "coffee"], [], [], []]
    assert got["cap_word_count"].tolist() == [5, 0, 2, 2]
    assert got["ocr_word_count"].tolist() == [2, 1, 0, 0]
    assert str(got["cap_word_count"].dtype) == "int32" and got["parrots"].dtype == bool


def test_analysis_batches_give_the_same_measures_plus_caption_words():
    from udfs.parrot import ANALYSIS_SCHEMA_DDL, analysis_batches

    df = pd.DataFrame(
        {
            "sample_id": pd.Series([10, 11, 12], dtype="int64"),
            "text": [CAPTION, None, "Sale, sale today!"],
            "ocr_text": ["BEST coffee", "OPEN", None],
            "has_text": [True, None, None],
            "kmeans": [3.0, float("nan"), 1.0],
        }
    )
    measured = next(parrot_batches(iter([df]), ParrotSettings()))
    got = next(analysis_batches(iter([df]), ParrotSettings(), carry=("kmeans",)))
    names = [part.split()[0] for part in ANALYSIS_SCHEMA_DDL.split(", ")]
    assert list(got.columns) == [*names, "kmeans"]
    pd.testing.assert_frame_equal(got[measured.columns], measured)
    assert got["cap_words"].tolist() == [words_normalised(CAPTION), [],
                                         ["sale", "sale", "today"]]  # order, duplicates
    assert got["kmeans"].tolist()[::2] == [3.0, 1.0]
