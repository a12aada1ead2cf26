"""Does a CLIP model read, and does it still see? The miniature experiment's metrics.

- Sync. Score (the paper's): cosine of a word rendered on a plain image with the word
  as text, averaged over words and the paper's four styles (udfs/sync_score.py).
- sync gap: the rendered word's cosine with its own word minus its mean cosine with the
  other words. A model that only moved every image-text cosine by a common offset (a
  tiny model does that early in training) has a Sync. Score above zero but a gap of 0.
- read top-1: the rendered word retrieves its own word among the vocabulary (chance is
  1 / len(words)).
- visual top-1: zero-shot classification of held-out visual images among the visual
  captions (does the model still see?).
"""

from __future__ import annotations

import numpy as np

from udfs.clip_models import ClipBundle, encode_images, encode_texts
from udfs.render import RenderSettings, render_word
from udfs.sync_score import SyncSettings, score_words


def reading(bundle: ClipBundle, words: list[str], render: RenderSettings) -> dict[str, float]:
    """sync_score, sync_gap and read_top1 of `bundle` over `words` (every style pooled)."""
    settings = SyncSettings(render=render, precision=bundle.precision, prefer_gpu=False,
                            random_init_ok=True)
    texts = encode_texts(bundle, list(words), 64)
    sync, gaps, hits = [], [], []
    for style in render.styles:
        sync.append(score_words(bundle, list(words), style, settings))
        sim = encode_images(bundle, [render_word(w, style, render) for w in words], 64) @ texts.T
        own = np.diag(sim)
        gaps.append(own - (sim.sum(axis=1) - own) / (len(words) - 1))
        hits.append(sim.argmax(axis=1) == np.arange(len(words)))
    return {"sync_score": float(np.nanmean(sync)), "sync_gap": float(np.mean(gaps)),
            "read_top1": float(np.mean(hits))}


def seeing(bundle: ClipBundle, images: list[np.ndarray], labels: list[int],
           classes: list[str]) -> float:
    """Zero-shot top-1 of `images` among the captions `classes` (labels index classes)."""
    texts = encode_texts(bundle, list(classes), 64)
    sim = encode_images(bundle, images, 64) @ texts.T
    return float(np.mean(sim.argmax(axis=1) == np.asarray(labels)))
