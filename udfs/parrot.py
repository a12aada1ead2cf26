"""Parrot-caption measures per image-text pair (paper: "Parrot Captions Teach CLIP to Spot Text").

A caption "parrots" when it repeats words that are printed inside its image. Three measures of
the Co-occurrence Text Ratio (CoTR = |caption words & OCR words| / |caption words|) are given,
from strict to lenient:

- `cotr` (exact, the paper's Algorithm 1 and the headline column): `set(text.split())` on both
  sides, Python's whitespace split, no lower-casing, so "coffee," differs from "coffee" and
  "BEST" from "best". A pair parrots (`parrots`) when this CoTR > 0.
- `cotr_norm`: the same formula over `words_normalised` (below). OCR output casing is
  arbitrary (PP-OCR reads "BEST COFFEE" on a sign the caption writes "best coffee"), so this is
  the measure that decides the OCR type and the co-emb. words.
- `cotr_fuzzy`: normalised words, and a caption word also matches when an OCR word is within
  Levenshtein distance `fuzzy_max_distance` of it (OCR misreads one character: "c0ffee",
  "cofee"). The paper does not publish its threshold; the defaults are in `ParrotSettings`.

Normalised tokenisation (`words_normalised`), in this order:
1. NFKC normalisation of the case-folded text (`unicodedata.normalize("NFKC", t.casefold())`):
   full-width "ＣＯＦＦＥＥ", ligatures ("ﬁ") and decomposed accents match their plain forms;
2. whitespace split (`str.split()`, the same split as Algorithm 1);
3. characters of Unicode general category P* (punctuation: connectors, dashes, brackets,
   quotes, "!", ",", ".", "#", "@", "¿", "。", ...) are stripped from both ends of each word;
   punctuation inside a word stays ("don't", "e-mail", "u.s.a" from "U.S.A."); symbols (S*:
   "$", "+", "©", "€", emoji) and digits are kept, they carry meaning ("$5", "c++");
4. words that become empty (pure punctuation such as "-" or "...") are dropped.
The result keeps order and duplicates, so the same list feeds the n-gram vocabularies.

OCR type of a pair (the three bar segments of the paper's per-cluster figure):
- `no_text`: the image has no text. `has_text` decides when it is known (it is "the detector
  found boxes", the recipe's own test); when it is None, the image counts as having text when
  its OCR text has at least one normalised word. When `has_text` is False the OCR text is
  ignored, so a `no_text` row always has zero CoTRs and no co-emb. words.
- `text_no_overlap`: the image has text and `cotr_norm == 0`. This includes images whose text
  was detected but not readable (no OCR words): the publish stage drops them as `text_found`
  too, so calling them `no_text` would disagree with the recipe.
- `co_emb`: the caption shares at least one normalised word with the OCR text.
Because the type uses normalised words, `parrots` (exact) and `ocr_type == "co_emb"` can differ
in rare cases: exact overlap of a pure-punctuation token ("-") parrots but is not co-emb.

Dataset-level figures (the paper's Table 1) are means of these per-row values: CoTR over all
pairs = mean(cotr); over text pairs = mean(cotr) where ocr_type != "no_text".
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pandas as pd

NO_TEXT = "no_text"
TEXT_NO_OVERLAP = "text_no_overlap"
CO_EMB = "co_emb"
OCR_TYPES = (NO_TEXT, TEXT_NO_OVERLAP, CO_EMB)

OUTPUT_COLUMNS = (
    "sample_id",
    "cap_word_count",
    "ocr_word_count",
    "cotr",
    "cotr_norm",
    "cotr_fuzzy",
    "parrots",
    "ocr_type",
    "co_emb_words",
)
PARROT_SCHEMA_DDL = (
    "sample_id long, cap_word_count int, ocr_word_count int, cotr double, cotr_norm double, "
    "cotr_fuzzy double, parrots boolean, ocr_type string, co_emb_words array<string>"
)


@dataclass(frozen=True)
class ParrotSettings:
    """Fuzzy-match settings.

    fuzzy_max_distance=1: one OCR error (a substitution such as "0" for "o", one dropped or
    doubled letter) is the common misread; at 2, unrelated short words start to match
    ("coffee" ~ "toffees").
    fuzzy_min_length=4: both words need at least this many characters to match fuzzily,
    shorter ones must match exactly; any two 1-letter words are at distance 1 ("a" ~ "I") and
    many 3-letter words too ("cat" ~ "car"). A known remaining false positive at the defaults
    is 4-letter neighbours ("cafe" ~ "care").
    """

    fuzzy_max_distance: int = 1
    fuzzy_min_length: int = 4

    def __post_init__(self) -> None:
        if self.fuzzy_max_distance < 0:
            raise ValueError(f"fuzzy_max_distance must be >= 0, got {self.fuzzy_max_distance}")
        if self.fuzzy_min_length < 1:
            raise ValueError(f"fuzzy_min_length must be >= 1, got {self.fuzzy_min_length}")


@lru_cache(maxsize=8192)
def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _strip_punct(word: str) -> str:
    start, end = 0, len(word)
    while start < end and _is_punct(word[start]):
        start += 1
    while end > start and _is_punct(word[end - 1]):
        end -= 1
    return word[start:end]


def words_exact(text: str | None) -> set[str]:
    """Algorithm 1's word set: `set(text.split())`, case and punctuation kept; None -> empty."""
    return set(text.split()) if text else set()


def words_normalised(text: str | None) -> list[str]:
    """The documented normalised tokenisation (module docstring), order and duplicates kept."""
    if not text:
        return []
    folded = unicodedata.normalize("NFKC", text.casefold())
    out = []
    for raw in folded.split():
        word = _strip_punct(raw)
        if word:
            out.append(word)
    return out


def ngrams(words: Sequence[str], n: int) -> list[str]:
    """Space-joined n-grams of consecutive words (as `words_normalised` returns them)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def cotr(cap: set[str], ocr: set[str]) -> float:
    """|cap & ocr| / |cap|; 0.0 for a caption without words (nothing can be parroted)."""
    if not cap:
        return 0.0
    return len(cap & ocr) / len(cap)


def cotr_normalised(caption: str | None, ocr_text: str | None) -> float:
    """`cotr_norm` of one pair: CoTR over `words_normalised` of both sides."""
    return cotr(set(words_normalised(caption)), set(words_normalised(ocr_text)))


def cotr_norm_series(captions: pd.Series, ocr_texts: pd.Series) -> pd.Series:
    """`cotr_normalised` over two aligned Series (a pandas UDF body); None/NaN = no words."""
    values = [cotr_normalised(_opt_str(c), _opt_str(o))
              for c, o in zip(captions, ocr_texts, strict=True)]
    return pd.Series(values, index=captions.index, dtype="float64")


def _fuzzy_matches(cap: set[str], ocr: set[str], settings: ParrotSettings) -> int:
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    long_ocr = [w for w in ocr if len(w) >= settings.fuzzy_min_length]
    matched = 0
    for word in cap:
        if word in ocr:
            matched += 1
        elif long_ocr and len(word) >= settings.fuzzy_min_length:
            best = process.extractOne(
                word,
                long_ocr,
                scorer=Levenshtein.distance,
                score_cutoff=settings.fuzzy_max_distance,
            )
            matched += best is not None
    return matched


def fuzzy_cotr(
    cap_norm: Iterable[str], ocr_norm: Iterable[str], settings: ParrotSettings | None = None
) -> float:
    """CoTR where a caption word matches an equal OCR word or, when both are at least
    `fuzzy_min_length` long, one within Levenshtein distance `fuzzy_max_distance`."""
    settings = settings or ParrotSettings()
    cap, ocr = set(cap_norm), set(ocr_norm)
    if not cap:
        return 0.0
    return _fuzzy_matches(cap, ocr, settings) / len(cap)


def _ocr_type(has_text: bool | None, ocr_norm: set[str], overlap: set[str]) -> str:
    text_present = bool(ocr_norm) if has_text is None else has_text
    if not text_present:
        return NO_TEXT
    return CO_EMB if overlap else TEXT_NO_OVERLAP


def measure(
    caption: str | None,
    ocr_text: str | None,
    has_text: bool | None,
    settings: ParrotSettings | None = None,
    caption_words: Sequence[str] | None = None,
) -> dict[str, Any]:
    """All parrot measures of one pair: the output columns of `parrot_batches` but sample_id.

    cap_word_count / ocr_word_count are the distinct exact words (Algorithm 1's set sizes).
    `caption_words`: the caption's `words_normalised`, when the caller has them already.
    """
    settings = settings or ParrotSettings()
    if has_text is False:
        ocr_text = None
    cap_x, ocr_x = words_exact(caption), words_exact(ocr_text)
    if caption_words is None:
        caption_words = words_normalised(caption)
    cap_n, ocr_n = set(caption_words), set(words_normalised(ocr_text))
    overlap = cap_n & ocr_n
    exact = cotr(cap_x, ocr_x)
    return {
        "cap_word_count": len(cap_x),
        "ocr_word_count": len(ocr_x),
        "cotr": exact,
        "cotr_norm": cotr(cap_n, ocr_n),  # = cotr_normalised(caption, ocr_text)
        "cotr_fuzzy": fuzzy_cotr(cap_n, ocr_n, settings),
        "parrots": exact > 0,
        "ocr_type": _ocr_type(has_text, ocr_n, overlap),
        "co_emb_words": sorted(overlap),
    }


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_bool(value: Any) -> bool | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def _frame(sample_ids: list[Any], rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS[1:]))
    df.insert(0, "sample_id", pd.Series(sample_ids, dtype="int64"))
    return df.astype(
        {
            "cap_word_count": "int32",
            "ocr_word_count": "int32",
            "cotr": "float64",
            "cotr_norm": "float64",
            "cotr_fuzzy": "float64",
            "parrots": "bool",
            "ocr_type": "object",
            "co_emb_words": "object",
        }
    )


def parrot_batches(
    batches: Iterator[pd.DataFrame], settings: ParrotSettings | None = None
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (sample_id, text, ocr_text, has_text) -> PARROT_SCHEMA_DDL columns.

    None/NaN text or OCR text counts as no words; None has_text is inferred from the OCR text.
    """
    settings = settings or ParrotSettings()
    for batch in batches:
        rows = [
            measure(_opt_str(cap), _opt_str(ocr), _opt_bool(has), settings)
            for cap, ocr, has in zip(
                batch["text"], batch["ocr_text"], batch["has_text"], strict=True
            )
        ]
        yield _frame(batch["sample_id"].tolist(), rows)


ANALYSIS_SCHEMA_DDL = PARROT_SCHEMA_DDL + ", cap_words array<string>"


def analysis_batches(
    batches: Iterator[pd.DataFrame],
    settings: ParrotSettings | None = None,
    carry: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """mapInPandas body of `deparrot analyze`'s one pass over every caption.

    Each caption is tokenised once: its words feed both the parrot measures and the n-gram
    vocabularies (`cap_words`, in order, duplicates kept). Output: PARROT columns +
    `cap_words` + the `carry` columns passed through unchanged (ANALYSIS_SCHEMA_DDL plus
    theirs). A row without OCR (not scored) gets the measures of an image without text.
    """
    settings = settings or ParrotSettings()
    for batch in batches:
        words = [words_normalised(_opt_str(cap)) for cap in batch["text"]]
        rows = [
            measure(_opt_str(cap), _opt_str(ocr), _opt_bool(has), settings, caption_words=w)
            for cap, ocr, has, w in zip(
                batch["text"], batch["ocr_text"], batch["has_text"], words, strict=True
            )
        ]
        out = _frame(batch["sample_id"].tolist(), rows)
        out["cap_words"] = words
        for name in carry:
            out[name] = batch[name].to_numpy()
        yield out
