"""Fine-tune the tiny open_clip model on rendered words, on CPU, in seconds.

Tests need a model that *has* learnt to spot text, to check that the Sync. Score tells it
apart from one that has not, without downloading real weights. A few hundred contrastive
steps (about two seconds) on images of words paired with the words themselves teach the
tiny ViT to match them. Reusable by later training tests and benchmarks.

By default only the image tower (and the temperature) learns, the text tower is locked
(LiT-style, with the roles swapped). With both towers free, the randomly initialised
model's image features are nearly identical for every word image (pairwise cosine
0.999), so the quickest way down the loss is to collapse all text embeddings onto one
direction too; training then sits at the chance loss ln(batch). A locked text tower
keeps distinct targets for the image tower to learn to hit. Training the text tower is
also about 40x slower here (dense AdamW updates of the 49408-row token embedding).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from udfs.clip_models import ClipBundle, bundle_tensor_batch, save_checkpoint
from udfs.render import RenderSettings, render_word


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 400
    batch_size: int = 16  # words per step; each word appears at most once per batch
    lr: float = 5e-4
    weight_decay: float = 0.0
    seed: int = 0
    template: str = "{}"
    train_text: bool = False  # see the module docstring before turning this on


def clip_contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over one batch of matching (image, text) rows."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def rendered_inputs(bundle: ClipBundle, words: list[str], render: RenderSettings) -> torch.Tensor:
    """Preprocessed images (len(render.styles), len(words), 3, S, S), as the encoders see them."""
    per_style = []
    for style in render.styles:
        images = [render_word(w, style, render) for w in words]
        per_style.append(bundle_tensor_batch(bundle, images))
    return torch.stack(per_style)


def _trainable(bundle: ClipBundle, train_text: bool) -> torch.nn.Module:
    model = copy.deepcopy(bundle.model).float().cpu().train().requires_grad_(train_text)
    model.visual.requires_grad_(True)
    model.logit_scale.requires_grad_(True)
    return model


def finetune_on_words(
    bundle: ClipBundle,
    words: list[str],
    render: RenderSettings | None = None,
    train: TrainSettings | None = None,
) -> tuple[torch.nn.Module, list[float]]:
    """A CPU float32 copy of `bundle.model` trained to match word images with the words.

    Each step draws `batch_size` distinct words (so no two rows of a batch share a text)
    and one random style per word. Returns the model (eval mode, frozen) and the losses.
    """
    render = render or RenderSettings()
    train = train or TrainSettings()
    if len(set(words)) != len(words):
        raise ValueError("words must be distinct (they are each other's negatives)")
    images = rendered_inputs(bundle, words, render)
    tokens = bundle.tokenizer([train.template.replace("{}", w, 1) for w in words])
    model = _trainable(bundle, train.train_text)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    rng = np.random.default_rng(train.seed)
    batch = min(train.batch_size, len(words))
    locked_text = None
    if not train.train_text:
        with torch.no_grad():
            locked_text = model.encode_text(tokens)
    losses = []
    for _ in range(train.steps):
        idx = torch.from_numpy(rng.permutation(len(words))[:batch])
        styles = torch.from_numpy(rng.integers(0, images.shape[0], batch))
        text = model.encode_text(tokens[idx]) if locked_text is None else locked_text[idx]
        loss = clip_contrastive_loss(
            model.encode_image(images[styles, idx]), text, model.logit_scale
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval().requires_grad_(False), losses


def save_state_dict(model: torch.nn.Module, path: str | Path) -> str:
    """Write `model`'s weights where `load_clip(name, path)` reads them (by suffix)."""
    return save_checkpoint(model, path)
