from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from udfs import clip_models as cm

TINY = cm.TINY_MODEL_NAME


class _NotATensor:
    """A pickled object that weights_only loading must refuse."""


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(100, 80), (80, 130), (40, 50), (64, 64), (300, 97)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


@pytest.fixture(scope="module")
def bundle() -> cm.ClipBundle:
    return cm.load_clip(TINY, None, "cpu", "fp32", random_init_ok=True)


def test_tiny_config_is_valid(bundle):
    assert bundle.embed_dim == 32
    assert bundle.preprocess_size == 64
    assert bundle.random_init and bundle.pretrained is None
    assert bundle.model_name == TINY and not bundle.model.training


def test_embeddings_shape_and_unit_norm(bundle):
    img = cm.encode_images(bundle, _images(), batch_size=2)
    txt = cm.encode_texts(bundle, ["a parrot", None, "SALE " * 200, "", "x"])
    for emb in (img, txt):
        assert emb.shape == (5, 32) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert cm.encode_images(bundle, []).shape == (0, 32)
    assert cm.encode_texts(bundle, []).shape == (0, 32)
    # Batching must not change results.
    np.testing.assert_allclose(cm.encode_images(bundle, _images()), img, atol=1e-5)


def test_clip_scores_rowwise_cosine(bundle):
    img = cm.encode_images(bundle, _images())
    txt = cm.encode_texts(bundle, ["a", "b", "c", "d", "e"])
    scores = cm.clip_scores(img, txt)
    assert scores.shape == (5,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, (img * txt).sum(axis=1), atol=1e-6)
    np.testing.assert_allclose(cm.clip_scores(img * 4, txt), scores, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        cm.clip_scores(img, txt[:3])


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
def test_preprocess_matches_open_clip(resize_mode):
    import open_clip

    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    ref_tf = open_clip.image_transform(
        64, is_train=False, mean=mean, std=std, resize_mode=resize_mode
    )
    images = _images()
    got = cm.image_tensor_batch(images, 64, mean, std, resize_mode=resize_mode)
    want = torch.stack([ref_tf(Image.fromarray(a)) for a in images])
    assert got.shape == (5, 3, 64, 64) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_preprocess_accepts_grey_and_rgba():
    grey = np.full((50, 70), 128, np.uint8)
    rgba = np.full((50, 70, 4), 128, np.uint8)
    out = cm.image_tensor_batch([grey, rgba], 64, (0.5,) * 3, (0.5,) * 3)
    torch.testing.assert_close(out[0], out[1])
    with pytest.raises(ValueError, match="uint8"):
        cm.image_tensor_batch([grey.astype(np.float32)], 64, (0.5,) * 3, (0.5,) * 3)


def test_random_init_needs_flag():
    for pretrained in (None, "random"):
        with pytest.raises(ValueError, match="random_init_ok"):
            cm.load_clip(TINY, pretrained, "cpu", "fp32")


def test_bad_pretrained_values(tmp_path):
    with pytest.raises(ValueError, match="known tags"):
        cm.load_clip(TINY, "laion2b_s34b_b79k", "cpu", "fp32")
    with pytest.raises(FileNotFoundError):
        cm.load_clip(TINY, str(tmp_path / "missing.safetensors"), "cpu", "fp32")
    npz = tmp_path / "weights.npz"
    npz.write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported checkpoint"):
        cm.load_clip(TINY, str(npz), "cpu", "fp32")
    with pytest.raises(ValueError, match="precision"):
        cm.load_clip(TINY, None, "cpu", "fp8", random_init_ok=True)


def test_load_by_path_gives_saved_weights(tmp_path, bundle):
    st = cm.save_random_checkpoint(TINY, tmp_path / "tiny.safetensors", seed=123)
    pt = cm.save_random_checkpoint(TINY, tmp_path / "tiny.pt", seed=123)
    a = cm.load_clip(TINY, st, "cpu", "fp32")
    b = cm.load_clip(TINY, pt, "cpu", "fp32")
    assert not a.random_init and a.pretrained == st
    from safetensors.torch import load_file

    saved = load_file(st)
    for name, tensor in a.model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], atol=0, rtol=0)
    images, texts = _images(), ["a parrot", "SALE"]
    np.testing.assert_array_equal(cm.encode_images(a, images), cm.encode_images(b, images))
    np.testing.assert_array_equal(cm.encode_texts(a, texts), cm.encode_texts(b, texts))
    # Different seed from the random-init bundle: proves the file was actually used.
    assert not np.allclose(cm.encode_texts(a, texts), cm.encode_texts(bundle, texts))


def test_unsafe_pickle_refused(tmp_path):
    cm.save_random_checkpoint(TINY, tmp_path / "ok.pt", seed=5)
    state = torch.load(tmp_path / "ok.pt", weights_only=True)
    state["extra"] = _NotATensor()
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        cm.load_clip(TINY, str(tmp_path / "evil.pt"), "cpu", "fp32")


def test_loaded_once_per_process(bundle):
    assert cm.load_clip(TINY, "random", "cpu", "fp32", random_init_ok=True) is bundle


def test_random_init_identical_across_workers(bundle):
    texts = ["a parrot", "SALE"]
    want = cm.encode_texts(bundle, texts)
    torch.manual_seed(999)  # a worker's global RNG state must not matter
    other = cm.load_clip(TINY, None, "cpu", "bf16", random_init_ok=True)  # new cache key
    assert other is not bundle
    np.testing.assert_array_equal(cm.encode_texts(other, texts), want)


def test_register_custom_config():
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 1,
            "layers": 1,
        },
    }
    cm.register_model_config("deparrot-test-micro", cfg)
    b = cm.load_clip("deparrot-test-micro", None, "cpu", "fp32", random_init_ok=True)
    assert b.embed_dim == 16 and b.preprocess_size == 32
    assert cm.encode_images(b, _images()[:2]).shape == (2, 16)
    with pytest.raises(ValueError, match="embed_dim"):
        cm.register_model_config("broken", {"vision_cfg": {}})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_close_to_cpu(bundle):
    gpu = cm.load_clip(TINY, None, "cuda", "fp16", random_init_ok=True)
    assert gpu.autocast_dtype == torch.float16
    images = _images()
    np.testing.assert_allclose(
        cm.encode_images(gpu, images), cm.encode_images(bundle, images), atol=2e-2
    )
    np.testing.assert_allclose(
        cm.encode_texts(gpu, ["a parrot"]), cm.encode_texts(bundle, ["a parrot"]), atol=2e-2
    )


def test_weights_under_a_remote_storage_files_load_like_local_ones(tmp_path, bundle):
    """Every weight file is read through udfs/storage.py: a CLIP checkpoint and the
    aesthetic head named relative to a non-local `storage.files` (fsspec's memory://)
    resolve there on the driver and load with the saved weights."""
    import dataclasses

    from jobs import score
    from jobs.config import Config
    from udfs import storage
    from udfs.aesthetic import AestheticMLP, load_aesthetic

    local = cm.save_random_checkpoint(TINY, tmp_path / "b32.safetensors", seed=7)
    storage.write_bytes("memory://deparrot-files/models/b32.safetensors",
                        Path(local).read_bytes())
    head = AestheticMLP(cm.load_clip(TINY, local, "cpu", "fp32").embed_dim)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    storage.write_bytes("memory://deparrot-files/models/head.pth",
                        (tmp_path / "head.pth").read_bytes())
    cfg = Config()
    cfg = dataclasses.replace(
        cfg, storage=dataclasses.replace(cfg.storage, files="memory://deparrot-files"),
        score=dataclasses.replace(cfg.score, clip_pretrained="models/b32.safetensors",
                                  aesthetic_weights="models/head.pth"))
    sc = score.model_files_on_shared_storage(cfg)
    assert sc.clip_pretrained == "memory://deparrot-files/models/b32.safetensors"
    assert sc.aesthetic_weights == "memory://deparrot-files/models/head.pth"

    remote = cm.load_clip(TINY, sc.clip_pretrained, "cpu", "fp32")
    assert not remote.random_init and remote.pretrained == sc.clip_pretrained
    texts = ["a parrot", "SALE"]
    from_local = cm.load_clip(TINY, local, "cpu", "fp32")
    np.testing.assert_array_equal(cm.encode_texts(remote, texts),
                                  cm.encode_texts(from_local, texts))
    mlp = load_aesthetic(sc.aesthetic_weights, "cpu", input_dim=head.layers[0].in_features)
    for name, tensor in mlp.state_dict().items():
        torch.testing.assert_close(tensor, head.state_dict()[name], atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="memory://deparrot-files/models/gone"):
        cm.load_clip(TINY, "memory://deparrot-files/models/gone.safetensors", "cpu", "fp32")
