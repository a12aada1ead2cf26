from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from udfs import aesthetic

PUBLISHED_KEYS = {f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")}


class _NotATensor:
    """A pickled object that weights_only loading must refuse."""


@pytest.fixture(autouse=True)
def _fresh_cache():
    aesthetic.clear_aesthetic_cache()
    yield
    aesthetic.clear_aesthetic_cache()


def _trained_like(seed: int = 3) -> aesthetic.AestheticMLP:
    torch.manual_seed(seed)
    return aesthetic.AestheticMLP().eval()


def _embeddings(n: int = 5, dim: int = 768) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32) * 7.0


def test_layout_matches_published_checkpoint():
    sd = aesthetic.AestheticMLP().state_dict()
    assert set(sd) == PUBLISHED_KEYS
    assert sd["layers.0.weight"].shape == (1024, 768)
    assert sd["layers.7.weight"].shape == (1, 16)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_by_path(tmp_path, suffix):
    ref = _trained_like()
    path = tmp_path / f"sac+logos+ava1-l14-linearMSE{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(ref.state_dict(), str(path))
    else:
        torch.save(ref.state_dict(), path)
    model = aesthetic.load_aesthetic(str(path), "cpu")
    emb = _embeddings()
    got = aesthetic.score(model, emb)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    with torch.no_grad():
        want = ref(torch.from_numpy(unit)).squeeze(1).numpy()
    assert got.shape == (5,) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    # Scale-invariant because of the L2 normalisation; deterministic because eval mode.
    np.testing.assert_allclose(aesthetic.score(model, emb * 3), got, rtol=1e-5, atol=1e-6)


def test_loaded_once_per_process(tmp_path):
    path = tmp_path / "a.pth"
    torch.save(_trained_like().state_dict(), path)
    assert aesthetic.load_aesthetic(str(path), "cpu") is aesthetic.load_aesthetic(str(path), "cpu")


def test_strict_loading_rejects_other_layouts(tmp_path):
    sd = _trained_like().state_dict()
    sd.pop("layers.7.bias")
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(RuntimeError, match="layers.7.bias"):
        aesthetic.load_aesthetic(str(path), "cpu")


def test_unsafe_pickle_refused(tmp_path):
    sd = dict(_trained_like().state_dict())
    sd["extra"] = _NotATensor()
    path = tmp_path / "evil.pth"
    torch.save(sd, path)
    with pytest.raises(pickle.UnpicklingError):
        aesthetic.load_aesthetic(str(path), "cpu")


def test_width_mismatch_names_both_widths():
    model = aesthetic.load_aesthetic(None, "cpu", random_init_ok=True)
    with pytest.raises(ValueError, match=r"512.*768"):
        aesthetic.score(model, _embeddings(dim=512))
    with pytest.raises(ValueError, match="shape"):
        aesthetic.score(model, np.zeros(768, dtype=np.float32))


def test_random_init_needs_flag(tmp_path):
    with pytest.raises(ValueError, match="random_init_ok"):
        aesthetic.load_aesthetic(None, "cpu")
    with pytest.raises(ValueError, match="random_init_ok"):
        aesthetic.load_aesthetic("random", "cpu")
    with pytest.raises(FileNotFoundError):
        aesthetic.load_aesthetic(str(tmp_path / "missing.pth"), "cpu")


def test_random_init_is_identical_across_workers():
    a = aesthetic.score(aesthetic.load_aesthetic(None, "cpu", random_init_ok=True), _embeddings())
    aesthetic.clear_aesthetic_cache()
    torch.manual_seed(1234)  # a worker's global RNG state must not matter
    b = aesthetic.score(aesthetic.load_aesthetic(None, "cpu", random_init_ok=True), _embeddings())
    np.testing.assert_array_equal(a, b)


def test_custom_input_width_and_empty_batch():
    model = aesthetic.load_aesthetic(None, "cpu", input_dim=32, random_init_ok=True)
    assert aesthetic.score(model, np.zeros((0, 32), np.float32)).shape == (0,)
    assert aesthetic.score(model, _embeddings(3, 32)).shape == (3,)
