"""The workbench: decisions, evidence, search and reviews of one lake, behind one object.

The web app (jobs/explore/app.py) and the Databricks notebooks (notebooks/explore.py)
both build a `Workbench` and render its answers with jobs/explore/views.py, so a view
exists once. Everything here reads; the one write is `review`, an append to the
`reviews` table.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

from jobs.config import Config
from jobs.explore import reviews as review_table
from jobs.explore.decisions import Decisions, GalleryFilters, WhatIf
from jobs.explore.search import EmbeddingIndex, Hit
from jobs.explore.tables import DeltaSource, ExploreError, TableSource


@dataclass
class Detail:
    row: dict
    boxes: list[dict]
    policies: list[dict]
    duplicates: dict
    reviews: list[dict]
    recipe: dict


class Workbench:
    def __init__(self, source: TableSource, cfg: Config, reviews_path: str | None = None):
        started = time.perf_counter()
        self.cfg = cfg
        self.source = source
        self.decisions = Decisions(source, cfg)
        self.index = EmbeddingIndex(source)
        if reviews_path is None and isinstance(source, DeltaSource):
            reviews_path = source.path("reviews")
        self.reviews_path = reviews_path
        # One duckdb connection, used from the server's thread pool: one query at a time.
        self._lock = threading.RLock()
        self._refresh_reviews()
        self.start_seconds = time.perf_counter() - started

    @classmethod
    def open(cls, cfg: Config) -> Workbench:
        return cls(DeltaSource(cfg), cfg)

    # ------------------------------------------------------------------ reads
    def funnel(self) -> dict:
        with self._lock:
            return self.decisions.funnel()

    def reasons(self) -> list[str]:
        with self._lock:
            return self.decisions.reasons()

    def reject_stages(self) -> list[str]:
        with self._lock:
            return self.decisions.reject_stages()

    def clusters(self) -> list[int]:
        with self._lock:
            return self.decisions.clusters()

    def ingest_rejects(self, reason: str | None) -> list[dict]:
        with self._lock:
            return self.decisions.ingest_rejects(reason)

    def recent_reviews(self, limit: int = 200) -> list[tuple]:
        with self._lock:
            return self.decisions.con.execute(
                "SELECT sample_id, label, reviewer, reviewed_at FROM _reviews "
                f"ORDER BY reviewed_at DESC LIMIT {int(limit)}").fetchall()

    def gallery(self, filters: GalleryFilters, page: int = 0, per_page: int = 48) -> dict:
        filters.base = self.cfg.recipe
        with self._lock:
            return self.decisions.gallery(filters, page, per_page)

    def whatif(self, w: WhatIf) -> dict:
        try:
            with self._lock:
                return self.decisions.whatif(w)
        except ValueError as exc:  # RecipeConfig's range checks
            raise ExploreError(str(exc)) from None

    def configured(self) -> WhatIf:
        return WhatIf.of(self.cfg.recipe)

    def detail(self, sample_id: int) -> Detail:
        with self._lock:
            row = self.decisions.row(sample_id)
            if row is None:
                raise ExploreError(f"no row with sample_id {sample_id}")
            policies = self.decisions.reasons_under_policies(sample_id)
            dups = self.decisions.duplicates(row)
            mine = self.decisions.con.execute(
                "SELECT label, reviewer, reviewed_at FROM _reviews WHERE sample_id = $s "
                "ORDER BY reviewed_at DESC", {"s": int(sample_id)}).fetchall()
        boxes = self._boxes(sample_id)
        return Detail(row, boxes, policies, dups,
                      [{"label": a, "reviewer": b, "reviewed_at": c} for a, b, c in mine],
                      dataclasses.asdict(self.cfg.recipe))

    def _boxes(self, sample_id: int) -> list[dict]:
        got = self.source.lookup("scores", sample_id, ("ocr_boxes",))
        return list((got or {}).get("ocr_boxes") or [])

    def image(self, sample_id: int) -> bytes | None:
        return self.source.image(int(sample_id))

    def search_caption(self, text: str, page: int = 0) -> dict:
        if not text.strip():
            raise ExploreError("empty search text")
        return self.gallery(GalleryFilters(caption=text), page)

    def search_meaning(self, text: str, k: int = 24) -> list[Hit]:
        return self.index.text(text, k)

    def more_like(self, sample_id: int, k: int = 24) -> list[Hit]:
        return self.index.like(sample_id, k)

    def quality(self) -> dict:
        with self._lock:
            return review_table.quality(self.decisions.con)

    # ------------------------------------------------------------------ the one write
    def review(self, sample_id: int, label: str, reviewer: str, note: str = "") -> None:
        if self.reviews_path is None:
            raise ExploreError("this workbench has nowhere to store reviews")
        with self._lock:
            if self.decisions.row(sample_id) is None:
                raise ExploreError(f"no row with sample_id {sample_id}")
        review_table.append(self.reviews_path,
                            [review_table.Review(int(sample_id), label, reviewer, note)])
        self._refresh_reviews()

    def _refresh_reviews(self) -> None:
        table = (review_table.read(self.reviews_path) if self.reviews_path
                 else review_table.SCHEMA.empty_table())
        with self._lock:
            review_table.latest(self.decisions.con, table)
