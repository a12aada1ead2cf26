"""Every row's curation decision and its evidence, in one in-process duckdb table.

The workbench answers "why is this row out?" and "what if the threshold were 0.28?"
from the same joined table the publish stage classifies (jobs/publish.py `classify`),
rebuilt here in SQL so it needs no JVM. `reason_sql` is the recipe of jobs/recipe.py
written once more, rule for rule and in the same order; tests/jobs/test_explore.py
publishes with the what-if's `--set` line and checks that Spark lands on the same
counts, so the two cannot drift apart unnoticed.

The parrot policy's CoTR is computed once per row at load (udfs.parrot, the tokeniser
publish uses), so moving `max_cotr` is a comparison, not a tokenisation.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from jobs.config import TEXT_POLICIES, Config, RecipeConfig
from jobs.explore.tables import ExploreError, TableSource
from jobs.recipe import NO_MASKED_SCORE, TEXT_REASONS
from udfs.parrot import cotr_normalised

# Funnel order of the stages that write rejects; others follow alphabetically.
STAGE_ORDER = ("ingest", "download", "score", "cluster", "dedup", "publish")
KEPT = "kept"
PENDING = "pending"

_META = ("sample_id", "url", "text", "width", "height")
_IMAGES = ("sample_id", "status", "error", "sha256", "width", "height")
_SCORES = ("sample_id", "status", "error", "ocr_box_count", "has_text", "ocr_text",
           "ocr_text_area", "clip_score", "clip_score_source", "masked_clip_score",
           "aesthetic_score", "aesthetic_source")
_DEDUP = ("sample_id", "kept", "reason", "duplicate_of", "group_size", "max_sim")


@dataclass(frozen=True)
class WhatIf:
    """The recipe knobs a curator moves; the rest of `recipe` stays as configured."""

    min_clip_score: float
    min_aesthetic: float
    text_policy: str
    max_cotr: float
    min_masked_clip_score: float

    @classmethod
    def of(cls, recipe: RecipeConfig) -> WhatIf:
        return cls(recipe.min_clip_score, recipe.min_aesthetic, recipe.text_policy,
                   recipe.max_cotr, recipe.min_masked_clip_score)

    def recipe(self, base: RecipeConfig) -> RecipeConfig:
        """`base` with these knobs: RecipeConfig validates the ranges (a bad value is a
        ValueError naming the key)."""
        return dataclasses.replace(base, **dataclasses.asdict(self))

    def set_line(self) -> str:
        """The `--set` arguments that make publish use exactly these knobs."""
        return " ".join(f"--set recipe.{k}={_fmt(v)}" for k, v in dataclasses.asdict(self).items())

    def yaml_overlay(self, extends: str) -> str:
        lines = [f"extends: {extends}", "recipe:"]
        lines += [f"  {k}: {_fmt(v)}" for k, v in dataclasses.asdict(self).items()]
        return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def text_reason_sql(policy: str) -> str:
    """jobs/recipe.py `text_reason` in SQL (parameters: max_cotr, min_masked)."""
    found = "found"
    if policy == "any_text":
        return f"CASE WHEN {found} THEN '{TEXT_REASONS['any_text']}' END"
    if policy == "parrots":
        return f"CASE WHEN {found} AND cotr > $max_cotr THEN '{TEXT_REASONS['parrots']}' END"
    if policy == "tmars":
        return (f"CASE WHEN {found} AND masked_clip_score IS NULL THEN '{NO_MASKED_SCORE}' "
                f"WHEN {found} AND masked_clip_score < $min_masked "
                f"THEN '{TEXT_REASONS['tmars']}' END")
    raise ExploreError(f"text_policy must be one of {', '.join(TEXT_POLICIES)}, got {policy!r}")


def reason_sql(policy: str) -> str:
    """jobs/publish.py `classify`'s reason for a decided row: the text rule, CLIP, aesthetic,
    then dedup's verdict (null = kept). Parameters: min_clip, min_aes, max_cotr, min_masked."""
    return f"""COALESCE(
        {text_reason_sql(policy)},
        CASE WHEN clip_score IS NULL OR clip_score <= $min_clip THEN 'low_clip_score'
             WHEN aesthetic_score IS NULL OR aesthetic_score <= $min_aes THEN 'low_aesthetic'
        END,
        CASE WHEN dedup_kept IS NULL THEN 'not_deduplicated' END,
        CASE WHEN NOT dedup_kept THEN dedup_reason END)"""


def params(w: WhatIf) -> dict[str, float]:
    return {"min_clip": float(w.min_clip_score), "min_aes": float(w.min_aesthetic),
            "max_cotr": float(w.max_cotr), "min_masked": float(w.min_masked_clip_score)}


def _cotr_column(text: pa.ChunkedArray, ocr_text: pa.ChunkedArray) -> pa.Array:
    """Normalised CoTR per row, computed only where there is OCR text (else 0.0, which
    is what publish's UDF returns for a caption against no words)."""
    captions = text.to_pylist()
    ocr = ocr_text.to_pylist()
    out = np.zeros(len(captions), dtype=np.float64)
    for i, o in enumerate(ocr):
        if o:
            out[i] = cotr_normalised(captions[i], o)
    return pa.array(out)


class Decisions:
    """The lake's rows joined once, queried many times (funnel, gallery, what-if)."""

    def __init__(self, source: TableSource, cfg: Config):
        started = time.perf_counter()
        self.source = source
        self.cfg = cfg
        meta = source.read("metadata", _META)
        if meta is None:
            raise ExploreError(
                f"no metadata table under {getattr(source, 'root', 'this source')}: run "
                "`deparrot ingest` (or `deparrot run`) with this config first")
        self.con = duckdb.connect()
        self.con.execute("SET threads TO 2").fetchall()
        empty = {
            "images": _IMAGES, "scores": _SCORES, "clusters": ("sample_id", "kmeans"),
            "dedup": _DEDUP,
        }
        frames = {"meta": meta}
        for key, cols in empty.items():
            frames[key] = source.read(key, cols) or _empty(cols)
        rejects = source.read("rejects", ("stage", "reason", "sample_id", "detail", "record"))
        frames["rejects"] = rejects if rejects is not None else _empty(
            ("stage", "reason", "sample_id", "detail", "record"))
        subset = source.read("subset", ("SAMPLE_ID",))
        self.has_subset = subset is not None
        frames["subset"] = subset if subset is not None else _empty(("SAMPLE_ID",))
        for name, table in frames.items():
            self.con.register(f"_{name}", table)
        pairs = self.con.sql(
            "SELECT s.sample_id, m.text, s.ocr_text FROM _scores s JOIN _meta m "
            "USING (sample_id) WHERE s.ocr_text IS NOT NULL AND s.ocr_text <> ''"
        ).to_arrow_table()
        self.con.register("_cotr", pa.table({
            "sample_id": pairs.column("sample_id"),
            "cotr": _cotr_column(pairs.column("text"), pairs.column("ocr_text"))}))
        boxes = int(self.cfg.recipe.max_text_boxes)
        # One row per metadata row: the published verdict (`published`: kept, the
        # reject's stage:reason, or pending) beside every input to the recipe.
        self.con.execute(f"""
            CREATE TABLE rows AS
            WITH rej AS (
                SELECT sample_id,
                       arg_min(stage || ':' || reason, {_stage_rank('stage')}) AS rejected
                FROM _rejects WHERE sample_id IS NOT NULL GROUP BY sample_id)
            SELECT m.sample_id, m.url, m.text,
                   i.status AS image_status, i.error AS image_error, i.sha256 AS image_sha256,
                   i.width AS image_width, i.height AS image_height,
                   s.status AS score_status, s.error AS score_error, s.ocr_box_count,
                   s.has_text, s.ocr_text, s.ocr_text_area, s.clip_score, s.clip_score_source,
                   s.masked_clip_score, s.aesthetic_score, s.aesthetic_source,
                   c.kmeans, d.kept AS dedup_kept, d.reason AS dedup_reason,
                   d.duplicate_of, d.group_size, d.max_sim,
                   coalesce(t.cotr, 0.0) AS cotr,
                   (i.status = 'ok' AND s.status = 'ok' AND c.kmeans IS NOT NULL) AS decided,
                   (coalesce(s.has_text, s.ocr_box_count > 0)
                    AND s.ocr_box_count > {boxes}) AS found,
                   CASE WHEN k.SAMPLE_ID IS NOT NULL THEN '{KEPT}'
                        ELSE coalesce(r.rejected, '{PENDING}') END AS published
            FROM _meta m
            LEFT JOIN _images i USING (sample_id)
            LEFT JOIN _scores s USING (sample_id)
            LEFT JOIN _clusters c USING (sample_id)
            LEFT JOIN _dedup d USING (sample_id)
            LEFT JOIN _cotr t USING (sample_id)
            LEFT JOIN (SELECT DISTINCT SAMPLE_ID FROM _subset) k ON k.SAMPLE_ID = m.sample_id
            LEFT JOIN rej r USING (sample_id)
        """).fetchall()
        self.con.execute("CREATE TABLE rejects AS SELECT * FROM _rejects").fetchall()
        self.n_rows = self.con.execute("SELECT count(*) FROM rows").fetchall()[0][0]
        self.load_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ funnel
    def funnel(self) -> dict:
        """Input rows, each stage's rejects by reason, pending rows and the subset; the
        parts add up to the input (the pipeline's invariant, shown rather than assumed)."""
        ingest_rejects = self.con.execute(
            "SELECT count(*) FROM rejects WHERE stage = 'ingest'").fetchall()[0][0]
        stages = self.con.execute(f"""
            SELECT split_part(published, ':', 1) AS stage,
                   substr(published, strpos(published, ':') + 1) AS reason, count(*) AS n
            FROM rows WHERE published NOT IN ('{KEPT}', '{PENDING}')
            GROUP BY ALL""").fetchall()
        ingest = self.con.execute(
            "SELECT reason, count(*) FROM rejects WHERE stage = 'ingest' GROUP BY reason"
        ).fetchall()
        by_stage: dict[str, list[tuple[str, int]]] = {}
        for stage, reason, n in stages:
            by_stage.setdefault(stage, []).append((reason, int(n)))
        if ingest:
            by_stage["ingest"] = [(r, int(n)) for r, n in ingest]
        ordered = sorted(by_stage, key=lambda s: (_rank(s), s))
        kept, pending = self.con.execute(f"""
            SELECT count(*) FILTER (published = '{KEPT}'),
                   count(*) FILTER (published = '{PENDING}') FROM rows""").fetchall()[0]
        return {
            "input": int(self.n_rows + ingest_rejects),
            "stages": [{"stage": s, "reasons": sorted(by_stage[s], key=lambda x: (-x[1], x[0])),
                        "total": sum(n for _, n in by_stage[s])} for s in ordered],
            "pending": int(pending),
            "kept": int(kept),
            "has_subset": self.has_subset,
        }

    # ------------------------------------------------------------------ what-if
    def whatif(self, w: WhatIf, samples: int = 12) -> dict:
        """Counts per reason under `w` for the decided rows, against the recipe as
        configured, and samples of the rows that flip in and out."""
        w.recipe(self.cfg.recipe)  # validates every knob, as publish would
        now = WhatIf.of(self.cfg.recipe)
        new, old = reason_sql(w.text_policy), reason_sql(now.text_policy)
        p = {**params(w), **{f"o_{k}": v for k, v in params(now).items()}}
        old = _rename_params(old, "o_")
        # One pass over the rows: how many rows each (reason under w, reason as configured)
        # pair holds and, where the pair flips a row in or out, its first rows by
        # hash(sample_id). (A temp table of both reasons, then six queries over it, took
        # 2.5x as long: 0.7-1.6 s at 10^6 rows, benchmarks/bench_explore.py.)
        sql = f"""
            SELECT new_reason, old_reason, count(*) AS n,
                   arg_min(struct_pack(h := hash(sample_id), s := sample_id),
                           hash(sample_id), {max(1, int(samples))})
                       FILTER ((new_reason IS NULL) <> (old_reason IS NULL)) AS firsts
            FROM (SELECT sample_id, {new} AS new_reason, {old} AS old_reason
                  FROM rows WHERE decided)
            GROUP BY ALL"""
        pairs = self.con.execute(sql, _bound(sql, p)).fetchall()
        counts, before = _tally(pairs, 0), _tally(pairs, 1)
        flips = {}
        for name, flipped in (("flip_in", lambda r, o: r is None and o is not None),
                              ("flip_out", lambda r, o: r is not None and o is None)):
            hit = [(r, o, n, firsts) for r, o, n, firsts in pairs if flipped(r, o)]
            rows = sorted((f["h"], f["s"], o, r) for r, o, _, firsts in hit
                          for f in firsts or ())[:max(0, int(samples))]
            flips[name] = {"count": int(sum(n for _, _, n, _ in hit)), "rows": [
                {"sample_id": int(s), "before": o or KEPT, "after": r or KEPT}
                for _, s, o, r in rows]}
        undeduplicated = dict(counts).get("not_deduplicated", 0)
        return {
            "settings": dataclasses.asdict(w),
            "counts": [(r, int(n)) for r, n in counts],
            "before": [(r, int(n)) for r, n in before],
            "kept": int(dict(counts).get(KEPT, 0)),
            "kept_before": int(dict(before).get(KEPT, 0)),
            "decided": int(sum(n for _, n in counts)),
            "not_deduplicated": int(undeduplicated),
            **flips,
            "set_line": w.set_line(),
        }

    def reasons_under_policies(self, sample_id: int) -> list[dict]:
        """The row's reason under every text policy, other knobs as configured."""
        out = []
        base = WhatIf.of(self.cfg.recipe)
        for policy in TEXT_POLICIES:
            w = dataclasses.replace(base, text_policy=policy)
            sql = f"SELECT decided, {reason_sql(policy)} FROM rows WHERE sample_id = $sid"
            row = self.con.execute(
                sql, _bound(sql, {**params(w), "sid": int(sample_id)})).fetchall()
            if not row:
                continue
            decided, reason = row[0]
            out.append({"policy": policy, "configured": policy == base.text_policy,
                        "decision": (PENDING if not decided else KEPT if reason is None
                                     else "rejected"),
                        "reason": reason})
        return out

    # ------------------------------------------------------------------ gallery
    def gallery(self, filters: GalleryFilters, page: int = 0, per_page: int = 48) -> dict:
        where, args = filters.sql()
        args = _bound(where, args)
        total = self.con.execute(f"SELECT count(*) FROM rows WHERE {where}", args).fetchall()[0][0]
        rows = self.con.execute(f"""
            SELECT sample_id, text, published, clip_score, aesthetic_score, ocr_box_count,
                   kmeans, image_status = 'ok' AS has_image
            FROM rows WHERE {where}
            ORDER BY sample_id LIMIT {int(per_page)} OFFSET {int(page) * int(per_page)}""",
            args).fetchall()
        cols = ("sample_id", "text", "published", "clip_score", "aesthetic_score",
                "ocr_box_count", "kmeans", "has_image")
        return {"total": int(total), "page": int(page), "per_page": int(per_page),
                "rows": [dict(zip(cols, r, strict=True)) for r in rows]}

    def ingest_rejects(self, reason: str | None, limit: int = 48) -> list[dict]:
        """Rows that never reached metadata (no sample id, no image): their reason and
        the record as read."""
        cond, args = ("stage = 'ingest'", {})
        if reason:
            cond += " AND reason = $reason"
            args = {"reason": reason}
        rows = self.con.execute(
            f"SELECT reason, detail, record FROM rejects WHERE {cond} LIMIT {int(limit)}",
            args).fetchall()
        return [{"reason": r, "detail": d, "record": rec} for r, d, rec in rows]

    # ------------------------------------------------------------------ one row
    def row(self, sample_id: int) -> dict | None:
        cur = self.con.execute("SELECT * FROM rows WHERE sample_id = $sid",
                               {"sid": int(sample_id)})
        names = [d[0] for d in cur.description]
        got = cur.fetchall()
        return dict(zip(names, got[0], strict=True)) if got else None

    def duplicates(self, row: dict, limit: int = 24) -> dict:
        """What this row (from `row()`) duplicates (its keeper) and what duplicates it."""
        sample_id, keeper = row["sample_id"], row["duplicate_of"]
        of_me = self.con.execute(f"""
            SELECT sample_id, dedup_reason, max_sim FROM rows
            WHERE duplicate_of = $sid AND sample_id <> $sid
            ORDER BY sample_id LIMIT {int(limit)}""", {"sid": int(sample_id)}).fetchall()
        return {"duplicate_of": None if keeper in (None, sample_id) else int(keeper),
                "duplicates": [{"sample_id": int(s), "reason": r, "max_sim": m}
                               for s, r, m in of_me]}

    def reasons(self) -> list[str]:
        """Every value of `published` present, and the ingest rejects' reasons (rows with
        no metadata row), for the gallery's reason filter."""
        return [r for (r,) in self.con.execute(
            "SELECT DISTINCT published FROM rows UNION "
            "SELECT DISTINCT 'ingest:' || reason FROM rejects WHERE stage = 'ingest' "
            "ORDER BY 1").fetchall()]

    def reject_stages(self) -> list[str]:
        return [s for (s,) in self.con.execute(
            "SELECT DISTINCT stage FROM rejects ORDER BY 1").fetchall()]

    def clusters(self) -> list[int]:
        return [int(c) for (c,) in self.con.execute(
            "SELECT DISTINCT kmeans FROM rows WHERE kmeans IS NOT NULL ORDER BY 1").fetchall()]


@dataclass
class GalleryFilters:
    """The gallery's filters, each optional; `sql()` binds them as parameters."""

    published: str | None = None  # kept | pending | stage:reason | stage (any reason)
    cluster: int | None = None
    policy: str | None = None  # with policy_verdict: rows that policy keeps or drops
    policy_verdict: str | None = None  # keep | drop
    min_clip: float | None = None
    max_clip: float | None = None
    min_aesthetic: float | None = None
    max_aesthetic: float | None = None
    has_text: bool | None = None
    caption: str | None = None  # case-insensitive substring of the caption
    ids: Sequence[int] | None = None  # an explicit list (search results)
    base: RecipeConfig | None = None  # knobs for the policy filter

    def sql(self) -> tuple[str, dict]:
        conds, args = ["TRUE"], {}
        if self.published:
            if ":" in self.published or self.published in (KEPT, PENDING):
                conds.append("published = $published")
            else:
                conds.append("split_part(published, ':', 1) = $published")
            args["published"] = self.published
        if self.cluster is not None:
            conds.append("kmeans = $cluster")
            args["cluster"] = int(self.cluster)
        for key, col, op in (("min_clip", "clip_score", ">="), ("max_clip", "clip_score", "<="),
                             ("min_aesthetic", "aesthetic_score", ">="),
                             ("max_aesthetic", "aesthetic_score", "<=")):
            value = getattr(self, key)
            if value is not None:
                conds.append(f"{col} {op} ${key}")
                args[key] = float(value)
        if self.has_text is not None:
            conds.append("coalesce(found, FALSE) = $has_text")
            args["has_text"] = bool(self.has_text)
        if self.caption:
            conds.append("contains(lower(text), lower($caption))")
            args["caption"] = self.caption
        if self.ids is not None:
            ids = ", ".join(str(int(i)) for i in self.ids) or "NULL"
            conds.append(f"sample_id IN ({ids})")
        if self.policy:
            if self.policy not in TEXT_POLICIES:
                raise ExploreError(f"policy must be one of {', '.join(TEXT_POLICIES)}")
            w = WhatIf.of(self.base or RecipeConfig())
            args.update(params(dataclasses.replace(w, text_policy=self.policy)))
            rule = text_reason_sql(self.policy)
            drop = self.policy_verdict != "keep"
            conds.append(f"decided AND ({rule}) IS {'NOT ' if drop else ''}NULL")
        return " AND ".join(conds), args


def _tally(pairs: list[tuple], side: int) -> list[tuple[str, int]]:
    """Rows per reason (null = kept) on one side of the what-if's (new, old) pairs, most
    first, then by name: `SELECT coalesce(reason, 'kept'), count(*) ... ORDER BY 2 DESC, 1`."""
    out: dict[str, int] = {}
    for pair in pairs:
        reason = pair[side] if pair[side] is not None else KEPT
        out[reason] = out.get(reason, 0) + int(pair[2])
    return sorted(out.items(), key=lambda x: (-x[1], x[0]))


def _bound(sql: str, args: dict) -> dict:
    """Only the parameters `sql` names: duckdb refuses unused ones."""
    used = set(re.findall(r"\$(\w+)", sql))
    return {k: v for k, v in args.items() if k in used}


def _rename_params(sql: str, prefix: str) -> str:
    for name in ("min_clip", "min_aes", "max_cotr", "min_masked"):
        sql = sql.replace(f"${name}", f"${prefix}{name}")
    return sql


def _rank(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def _stage_rank(col: str) -> str:
    cases = " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(STAGE_ORDER))
    return f"CASE {col} {cases} ELSE {len(STAGE_ORDER)} END"


def _empty(columns: Sequence[str]) -> pa.Table:
    types = {"sample_id": pa.int64(), "SAMPLE_ID": pa.int64(), "kmeans": pa.int64(),
             "kept": pa.bool_(), "has_text": pa.bool_(), "ocr_box_count": pa.int32(),
             "duplicate_of": pa.int64(), "group_size": pa.int32(), "max_sim": pa.float32()}
    doubles = {"clip_score", "masked_clip_score", "aesthetic_score", "ocr_text_area",
               "width", "height"}
    return pa.table({c: pa.array([], types.get(c, pa.float64() if c in doubles
                                               else pa.string())) for c in columns})
