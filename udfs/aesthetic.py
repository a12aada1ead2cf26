"""LAION "improved aesthetic predictor": an MLP over L2-normalised CLIP ViT-L/14 embeddings.

The layer layout mirrors the published training code exactly so that
`sac+logos+ava1-l14-linearMSE.pth` loads with strict=True.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from torch import nn

from udfs import storage
from udfs.checkpoint_files import is_random as random_weights
from udfs.device import select_device
from udfs.worker_cache import clear, worker_cached

L14_DIM = 768
_RANDOM_SEED = 0  # identical random heads in every worker (tests and demos only)


class AestheticMLP(nn.Module):
    def __init__(self, input_dim: int = L14_DIM) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or torch.load with weights_only (no arbitrary pickle)."""
    data = storage.read_bytes(path)  # a local/mounted path or a URL (udfs/storage.py)
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load as load_safetensors

        state = load_safetensors(data)
    else:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def load_aesthetic(
    path: str | None,
    device: torch.device | str | None = None,
    *,
    input_dim: int = L14_DIM,
    random_init_ok: bool = False,
) -> AestheticMLP:
    """The process-wide predictor for (path, device, input_dim), in eval mode."""
    dev = select_device() if device is None else torch.device(device)
    is_random = random_weights(path)
    if is_random and not random_init_ok:
        raise ValueError(
            "no aesthetic predictor weights given: refusing to score with a randomly "
            "initialised MLP. Point to sac+logos+ava1-l14-linearMSE.pth (or a .safetensors "
            "copy), or pass random_init_ok=True (tests and demos only)."
        )
    resolved = "random" if is_random else str(path)
    if not is_random and not storage.is_remote(resolved):
        resolved = os.path.abspath(os.path.expanduser(storage.local_path(resolved)))
    if not is_random and not storage.isfile(resolved):
        raise FileNotFoundError(f"aesthetic predictor weights not found: {resolved}")
    def build() -> AestheticMLP:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_RANDOM_SEED)
            model = AestheticMLP(input_dim)
        if not is_random:
            model.load_state_dict(_read_state_dict(resolved), strict=True)
        return model.to(dev).eval().requires_grad_(False)

    return worker_cached("aesthetic", (resolved, str(dev), int(input_dim)), build)


def clear_aesthetic_cache() -> None:
    clear("aesthetic")


def score(model: AestheticMLP, l14_embeddings: np.ndarray) -> np.ndarray:
    """Aesthetic scores (N,) float32; embeddings are L2-normalised first, as LAION does."""
    emb = np.asarray(l14_embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"expected (N, D) embeddings, got shape {emb.shape}")
    if emb.shape[1] != model.input_dim:
        hint = " (CLIP ViT-L/14 image embeddings)" if model.input_dim == L14_DIM else ""
        raise ValueError(
            f"embedding width {emb.shape[1]} does not match the aesthetic model's input width "
            f"{model.input_dim}{hint}"
        )
    if emb.shape[0] == 0:
        return np.zeros((0,), dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.maximum(norms, 1e-12)
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(torch.from_numpy(emb).to(device))
    return out.float().squeeze(1).cpu().numpy()
