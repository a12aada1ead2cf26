"""open_clip models loaded once per Python worker, and encoders over decoded RGB arrays.

Images reach the executors already decoded (for OCR), so preprocessing works on arrays
and reproduces open_clip's eval transform instead of re-encoding to PIL files: with
Pillow on CPU (open_clip's own code path), with torch on the GPU (the same geometry,
antialiased bicubic/bilinear like Pillow's; `preprocess_on_device`), where the image
arrives once as uint8 (`upload_images`: pinned host memory, non-blocking copies) and
the model runs channels-last under autocast. Weights from local files are read with
`weights_only=True` torch.load or safetensors, never with unrestricted pickle.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from udfs import storage
from udfs.checkpoint_files import CHECKPOINT_SUFFIXES, is_random, looks_like_file
from udfs.device import inference_dtype, select_device
from udfs.worker_cache import clear, worker_cached

TINY_MODEL_NAME = "deparrot-tiny-vit"
# Smallest valid open_clip ViT: for tests and the local demo, never for real scoring.
TINY_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

MINI_READER_NAME = "deparrot-mini-rn"
# A small open_clip ModifiedResNet (CLIP's RN architecture, 1 block per stage, width 16)
# at 64 px: the model of the miniature experiment (jobs/miniature.py). It learns to read
# the world's 4-letter words within a few tens of thousands of samples on 2 CPU cores;
# the tiny ViT above (16 patches of 16 px), and an 8 px-patch variant, did not read at
# all in that budget, and a width-24 ResNet read less per second of training.
MINI_READER_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_SCHEMAS = ("hf-hub:", "local-dir:")
_RANDOM_SEED = 0  # every worker must build the same random model, or partitions disagree

_CONFIGS: dict[str, dict[str, Any]] = {TINY_MODEL_NAME: TINY_MODEL_CONFIG,
                                       MINI_READER_NAME: MINI_READER_CONFIG}
_REGISTERED: set[str] = set()
_CONFIG_DIR: Path | None = None
_LOCK = threading.RLock()


@dataclass(frozen=True, eq=False)
class ClipBundle:
    model: torch.nn.Module
    preprocess_size: int
    tokenizer: Any
    embed_dim: int
    random_init: bool
    model_name: str
    pretrained: str | None
    device: torch.device
    precision: str
    autocast_dtype: torch.dtype
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    fill_color: int = 0


def register_model_config(name: str, cfg: dict[str, Any]) -> None:
    """Make `name` usable as an open_clip model name in this process.

    Goes through open_clip's public `add_model_config` (a JSON file in a private temp
    dir) rather than its private config dict.
    """
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(f"model config {name!r} needs embed_dim, vision_cfg and text_cfg")
    with _LOCK:
        _CONFIGS[name] = cfg
        _REGISTERED.discard(name)
        _open_clip()


def _open_clip() -> Any:
    """Import open_clip and register any configs it has not seen yet."""
    global _CONFIG_DIR
    import open_clip

    with _LOCK:
        pending = {n: c for n, c in _CONFIGS.items() if n not in _REGISTERED}
        for name, cfg in pending.items():
            if _CONFIG_DIR is None:
                _CONFIG_DIR = Path(tempfile.mkdtemp(prefix="deparrot-openclip-"))
            # One folder per write so a re-registered name is rescanned after the old one.
            path = Path(tempfile.mkdtemp(dir=_CONFIG_DIR)) / f"{name}.json"
            path.write_text(json.dumps(cfg))
            open_clip.add_model_config(path)
            if name not in open_clip.list_models():
                raise RuntimeError(f"open_clip did not accept model config {name!r}")
            _REGISTERED.add(name)
    return open_clip


def _resolve_pretrained(
    open_clip: Any, model_name: str, pretrained: str | None, random_init_ok: bool
) -> tuple[str | None, bool, bool]:
    """(pretrained for open_clip, is_random, force_quick_gelu) with clear errors."""
    if model_name.startswith(_SCHEMAS):
        if not is_random(pretrained):
            raise ValueError(f"{model_name!r} brings its own weights; pretrained must be None")
        return None, False, False
    if is_random(pretrained):
        if not random_init_ok:
            raise ValueError(
                f"no pretrained weights given for CLIP model {model_name!r}: refusing to score "
                "with a randomly initialised model. Set pretrained to an open_clip tag or a "
                f"checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}), or pass "
                "random_init_ok=True (tests and demos only)."
            )
        return None, True, False
    if storage.is_remote(pretrained) or looks_like_file(pretrained) or os.path.exists(pretrained):
        path = pretrained if storage.is_remote(pretrained) else os.path.abspath(
            os.path.expanduser(storage.local_path(pretrained)))
        if not path.lower().endswith(CHECKPOINT_SUFFIXES):
            raise ValueError(
                f"unsupported checkpoint file {pretrained!r}: use one of {CHECKPOINT_SUFFIXES}"
            )
        if not storage.isfile(path):  # a local, mounted or object-store path alike
            raise FileNotFoundError(f"CLIP checkpoint not found: {path}")
        return path, False, False
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"{pretrained!r} is neither a checkpoint file nor an open_clip tag for "
            f"{model_name!r} (known tags: {tags})"
        )
    # Tags trained with QuickGELU (openai, some laion) silently degrade without it.
    quick = bool(tag_cfg.get("quick_gelu")) and "quickgelu" not in model_name.lower()
    return pretrained, False, quick


def load_clip(
    model_name: str,
    pretrained: str | None,
    device: torch.device | str | None = None,
    precision: str = "fp16",
    *,
    random_init_ok: bool = False,
    cache_dir: str | None = None,
) -> ClipBundle:
    """The process-wide model for (model_name, pretrained, device, precision).

    `pretrained`: an open_clip tag (downloaded to `cache_dir` as usual), a local
    checkpoint file, or None/"random" (only with `random_init_ok`). Weights stay float32;
    on CUDA the forward pass runs under autocast in `precision` ("fp16"|"bf16"|"fp32").
    """
    dev = select_device() if device is None else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    autocast_dtype = inference_dtype(dev, precision)  # validates precision
    open_clip = _open_clip()
    resolved, random_init, quick_gelu = _resolve_pretrained(
        open_clip, model_name, pretrained, random_init_ok
    )
    key = (model_name, "random" if random_init else str(resolved), str(dev), precision)
    return worker_cached("clip", key, lambda: _build(
        open_clip, model_name, resolved, random_init, quick_gelu, dev, precision,
        autocast_dtype, cache_dir))


def _build(
    open_clip: Any,
    model_name: str,
    pretrained: str | None,
    random_init: bool,
    quick_gelu: bool,
    device: torch.device,
    precision: str,
    autocast_dtype: torch.dtype,
    cache_dir: str | None,
) -> ClipBundle:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_SEED)
        model = open_clip.create_model(
            model_name,
            # open_clip opens files by name: a remote checkpoint is fetched once first.
            pretrained=storage.local_copy(pretrained) if pretrained and storage.is_remote(
                pretrained) else pretrained,
            precision="fp32",
            device=device,
            force_quick_gelu=quick_gelu,
            cache_dir=cache_dir,
            weights_only=True,
            require_pretrained=not random_init and not model_name.startswith(_SCHEMAS),
        )
    model.eval().requires_grad_(False)
    if device.type == "cuda":
        # The patch-embedding convolution reads channels-last input without a transpose.
        model = model.to(memory_format=torch.channels_last)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f"{model_name}: non-square input size {size} is not supported")
        size = size[0]
    tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    with torch.inference_mode():
        embed_dim = int(model.encode_text(tokenizer([""]).to(device)).shape[-1])
    return ClipBundle(
        model=model,
        preprocess_size=int(size),
        tokenizer=tokenizer,
        embed_dim=embed_dim,
        random_init=random_init,
        model_name=model_name,
        pretrained=None if random_init else pretrained,
        device=device,
        precision=precision,
        autocast_dtype=autocast_dtype,
        mean=tuple(float(v) for v in pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(float(v) for v in pp.get("std", open_clip.OPENAI_DATASET_STD)),
        resize_mode=pp.get("resize_mode", "shortest") or "shortest",
        interpolation=pp.get("interpolation", "bicubic") or "bicubic",
        fill_color=int(pp.get("fill_color", 0) or 0),
    )


def clear_clip_cache() -> None:
    clear("clip")


def _resize_one(
    img: Image.Image, size: int, resize_mode: str, resample: Image.Resampling, fill: int
) -> Image.Image:
    """open_clip's eval geometry (torchvision Resize + CenterCrop / pad) on a PIL image."""
    w, h = img.size
    if resize_mode == "squash":
        return img.resize((size, size), resample)
    if resize_mode == "longest":
        ratio = max(h, w) / size
        img = img.resize((round(w / ratio), round(h / ratio)), resample)
        canvas = Image.new("RGB", (size, size), (fill, fill, fill))
        canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
        return canvas
    if resize_mode != "shortest":
        raise ValueError(f"unknown resize_mode {resize_mode!r}")
    new_h, new_w, top, left = shortest_side_geometry(h, w, size)
    img = img.resize((new_w, new_h), resample)
    return img.crop((left, top, left + size, top + size))


def shortest_side_geometry(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """open_clip's "shortest" eval transform as numbers, shared by the Pillow and torch
    paths: (resized h, resized w, crop top, crop left). As torchvision: the short side
    becomes `size`, the long side int(size * long / short), then a centre crop."""
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


def image_tensor_batch(
    images: list[np.ndarray],
    size: int,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    *,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
    fill_color: int = 0,
) -> torch.Tensor:
    """CLIP input batch (N, 3, size, size) float32 from RGB uint8 HxWx3 arrays."""
    bilinear = interpolation == "bilinear"
    resample = Image.Resampling.BILINEAR if bilinear else Image.Resampling.BICUBIC
    if not images:
        return torch.empty((0, 3, size, size), dtype=torch.float32)
    arrays = []
    for arr in images:
        a = np.asarray(arr)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
            raise ValueError(f"expected HxWx3 uint8 RGB arrays, got {a.shape} {a.dtype}")
        img = Image.fromarray(np.ascontiguousarray(a[:, :, :3]), mode="RGB")
        arrays.append(np.asarray(_resize_one(img, size, resize_mode, resample, fill_color)))
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - m) / s


def _autocast(bundle: ClipBundle) -> Any:
    enabled = bundle.device.type == "cuda" and bundle.autocast_dtype != torch.float32
    return torch.autocast(
        device_type=bundle.device.type, dtype=bundle.autocast_dtype, enabled=enabled
    )


def _to_unit_numpy(features: torch.Tensor) -> np.ndarray:
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy().astype(np.float32, copy=False)


def upload_images(images: list[np.ndarray], device: torch.device | str) -> list[torch.Tensor]:
    """Each RGB uint8 HxWx3 array once on `device`, as a uint8 tensor of the same shape.

    Same-size images travel together: one pinned host buffer and one non-blocking copy
    per size. On CPU the tensors share the arrays' memory (read-only arrays are copied).
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return [torch.from_numpy(np.require(a, np.uint8, ["C", "W"])) for a in images]
    out: list[torch.Tensor | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(images):
        by_shape.setdefault(tuple(np.shape(a)), []).append(i)
    for idx in by_shape.values():
        host = torch.from_numpy(np.stack([np.asarray(images[i], np.uint8) for i in idx]))
        on_device = host.pin_memory().to(dev, non_blocking=True)
        for j, i in enumerate(idx):
            out[i] = on_device[j]
    return out  # type: ignore[return-value]


def _resize_tensor(x: torch.Tensor, size: int, resize_mode: str, mode: str,
                   fill: int) -> torch.Tensor:
    """`_resize_one` on a (N, 3, H, W) float batch in 0..255 (one source size)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]

    def resize(new_h: int, new_w: int) -> torch.Tensor:
        if (new_h, new_w) == (h, w):
            return x
        # antialias=True: Pillow's filters (a = -0.5 bicubic, support scaled on shrink).
        y = F.interpolate(x, size=(new_h, new_w), mode=mode, align_corners=False,
                          antialias=True)
        return y.clamp_(0.0, 255.0).round_()  # Pillow resizes 8-bit images to 8 bits

    if resize_mode == "squash":
        return resize(size, size)
    if resize_mode == "longest":
        ratio = max(h, w) / size
        y = resize(round(h / ratio), round(w / ratio))
        canvas = torch.full((x.shape[0], 3, size, size), float(fill), dtype=x.dtype,
                            device=x.device)
        top, left = (size - y.shape[-2]) // 2, (size - y.shape[-1]) // 2
        canvas[:, :, top:top + y.shape[-2], left:left + y.shape[-1]] = y
        return canvas
    if resize_mode != "shortest":
        raise ValueError(f"unknown resize_mode {resize_mode!r}")
    new_h, new_w, top, left = shortest_side_geometry(h, w, size)
    y = resize(new_h, new_w)
    return y[:, :, top:top + size, left:left + size]


def bundle_tensor_batch(bundle: ClipBundle, images: list[np.ndarray]) -> torch.Tensor:
    """`image_tensor_batch` with the model's own preprocessing settings."""
    return image_tensor_batch(images, bundle.preprocess_size, bundle.mean, bundle.std,
                              resize_mode=bundle.resize_mode,
                              interpolation=bundle.interpolation,
                              fill_color=bundle.fill_color)


def preprocess_on_device(bundle: ClipBundle, images: list[torch.Tensor]) -> torch.Tensor:
    """CLIP input batch (N, 3, S, S), channels-last, from uint8 HxWx3 tensors on one
    device: the geometry of `image_tensor_batch`, computed where the tensors are."""
    size = bundle.preprocess_size
    dev = images[0].device if images else bundle.device
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=dev)
    mode = "bilinear" if bundle.interpolation == "bilinear" else "bicubic"
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(images):
        if t.dim() != 3 or t.shape[-1] != 3 or t.dtype != torch.uint8:
            raise ValueError(f"expected HxWx3 uint8 tensors, got {tuple(t.shape)} {t.dtype}")
        by_shape.setdefault(tuple(t.shape), []).append(i)
    for idx in by_shape.values():
        x = torch.stack([images[i] for i in idx]).permute(0, 3, 1, 2).float()
        y = _resize_tensor(x, size, bundle.resize_mode, mode, bundle.fill_color)
        out[torch.tensor(idx, device=dev)] = y
    mean = torch.tensor(bundle.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    out = out.div_(255.0).sub_(mean).div_(std)
    return out.contiguous(memory_format=torch.channels_last)


def encode_images(
    bundle: ClipBundle, images: list[np.ndarray], batch_size: int | None = None,
    *, device_images: list[torch.Tensor] | None = None,
) -> np.ndarray:
    """L2-normalised float32 image embeddings (N, embed_dim).

    On CUDA, preprocessing runs on the GPU from `device_images` (the same images already
    there, as from `upload_images`) or from one upload of `images`; the embeddings of
    all batches stay on the device until one copy back at the end.
    """
    if not images:
        return np.zeros((0, bundle.embed_dim), dtype=np.float32)
    step = batch_size or len(images)
    on_gpu = bundle.device.type == "cuda"
    if on_gpu and device_images is None:
        device_images = upload_images(images, bundle.device)
    out = []
    for start in range(0, len(images), step):
        if on_gpu:
            x = preprocess_on_device(bundle, device_images[start : start + step])
        else:
            x = bundle_tensor_batch(bundle, images[start : start + step])
        with torch.inference_mode(), _autocast(bundle):
            out.append(bundle.model.encode_image(x).float())
    return _to_unit_numpy(torch.cat(out))


def encode_texts(
    bundle: ClipBundle, texts: list[str | None], batch_size: int | None = None
) -> np.ndarray:
    """L2-normalised float32 text embeddings (N, embed_dim); None counts as ""."""
    if not texts:
        return np.zeros((0, bundle.embed_dim), dtype=np.float32)
    step = batch_size or len(texts)
    out = []
    for start in range(0, len(texts), step):
        chunk = ["" if t is None else str(t) for t in texts[start : start + step]]
        tokens = bundle.tokenizer(chunk)
        if bundle.device.type == "cuda":
            tokens = tokens.pin_memory().to(bundle.device, non_blocking=True)
        with torch.inference_mode(), _autocast(bundle):
            out.append(bundle.model.encode_text(tokens).float())
    return _to_unit_numpy(torch.cat(out))


def clip_scores(img_emb: np.ndarray, txt_emb: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of paired embeddings, float32 (N,)."""
    a = np.asarray(img_emb, dtype=np.float32)
    b = np.asarray(txt_emb, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired embeddings must share one (N, D) shape, got {a.shape}, {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    denom = np.maximum(na * nb, 1e-12)
    return (np.einsum("nd,nd->n", a, b) / denom).astype(np.float32)


def save_random_checkpoint(model_name: str, path: str | os.PathLike[str], *, seed: int = 0) -> str:
    """Write a randomly initialised state dict (safetensors or torch.save by suffix)."""
    open_clip = _open_clip()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name, pretrained=None, precision="fp32")
    return save_checkpoint(model, path)


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> str:
    """Write `model`'s weights where `load_clip(name, path)` reads them (by suffix)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    out = str(path)
    if out.lower().endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, out)
    elif out.lower().endswith(CHECKPOINT_SUFFIXES):
        torch.save(state, out)
    else:
        raise ValueError(f"checkpoint path must end with one of {CHECKPOINT_SUFFIXES}: {out}")
    return out
