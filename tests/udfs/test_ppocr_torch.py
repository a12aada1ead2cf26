"""The PP-OCR networks in torch (udfs.ppocr_torch) against onnxruntime, and the batched
spotter's `runtime` option."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from udfs import ocr

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "benchmarks" / "ocr_real"
TOL = 1e-3  # max abs difference allowed between the two runtimes' outputs


def _model(name: str) -> Path:
    import rapidocr

    return Path(rapidocr.__file__).parent / "models" / name


DET = "PP-OCRv6_det_small.onnx"
REC = "PP-OCRv6_rec_small.onnx"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread, as the spotters' onnxruntime sessions (num_threads=1): on a
    busy 2-core runner, torch's thread team waiting for a core costs more than it gains."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def det():
    """(torch module, onnxruntime session) of the detector, loaded once."""
    import onnxruntime as ort

    from udfs.ppocr_torch import load_torch_ppocr

    return (load_torch_ppocr(_model(DET), "cpu"),
            ort.InferenceSession(str(_model(DET)), providers=["CPUExecutionProvider"]))


@pytest.fixture(scope="module")
def rec():
    import onnxruntime as ort

    from udfs.ppocr_torch import load_torch_ppocr

    return (load_torch_ppocr(_model(REC), "cpu"),
            ort.InferenceSession(str(_model(REC)), providers=["CPUExecutionProvider"]))


def _both(pair, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    net, session = pair
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        got = net(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    return got, want


def _real_images(n: int | None = None, side: int | None = None) -> list[tuple[str, np.ndarray]]:
    """ocr_real photographs (labels.csv order), optionally shrunk to a long side."""
    with open(REAL / "labels.csv", newline="") as f:
        names = [row["file"] for row in csv.DictReader(f)]
    out = []
    for name in names[:n]:
        img = Image.open(REAL / "images" / name).convert("RGB")
        if side and max(img.size) > side:
            img.thumbnail((side, side))
        out.append((name, np.asarray(img)))
    return out


def _normalised(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    """rapidocr's det/rec input: BGR planes, (x / 255 - 0.5) / 0.5, at (h, w)."""
    import cv2

    x = cv2.resize(rgb, (w, h)).astype(np.float32) * (2.0 / 255.0) - 1.0
    return np.ascontiguousarray(x[:, :, ::-1].transpose(2, 0, 1))


# Multiples of 32 (the detector's FPN needs them) whose halvings go odd at different
# depths (96 -> 3, 160 -> 5, 224 -> 7 at stride 32), and a batch of two.
@pytest.mark.parametrize("shape", [(1, 3, 96, 160), (1, 3, 128, 224), (2, 3, 96, 160)])
def test_det_matches_onnxruntime(det, shape):
    x = np.random.default_rng(sum(shape)).uniform(-1, 1, shape).astype(np.float32)
    got, want = _both(det, x)
    assert np.abs(got - want).max() < TOL


def test_det_matches_onnxruntime_on_a_photograph(det):
    """A real photo with text at its detector size (the spotter's own size rule; a
    384 px short side rather than the default 1024 to keep the default run fast)."""
    from udfs.batched_ocr import det_size

    rgb = np.asarray(Image.open(REAL / "images" / "colite_3.jpg").convert("RGB"))
    h, w = det_size(*rgb.shape[:2], 384, "min")
    got, want = _both(det, _normalised(rgb, h, w)[None])
    assert np.abs(got - want).max() < TOL
    assert want.max() > 0.9  # it does see text: the comparison covers real activations


@pytest.mark.parametrize("batch,width", [(1, 320), (2, 480)])
def test_rec_matches_onnxruntime(rec, batch, width):
    rgb = np.asarray(Image.open(REAL / "images" / "colite_3.jpg").convert("RGB"))
    rows = rgb.shape[0] // (batch + 1)
    x = np.stack([_normalised(rgb[k * rows:(k + 1) * rows], 48, width) for k in range(batch)])
    got, want = _both(rec, x)
    assert got.shape == (batch, width // 8, want.shape[2])
    assert np.abs(got - want).max() < TOL
    assert (got.argmax(2) == want.argmax(2)).all()


def test_module_follows_device_and_dtype_and_loads_once(det):
    import torch

    from udfs.ppocr_torch import load_torch_ppocr

    net, session = det
    assert load_torch_ppocr(_model(DET), "cpu") is net  # the worker cache
    assert {"Conv", "Resize", "ConvTranspose"} <= set(net.op_types)
    half = load_torch_ppocr(_model(DET), "cpu", torch.bfloat16)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    with torch.inference_mode():
        low = half(torch.from_numpy(x)).float().numpy()
    want = session.run(None, {"x": x})[0]
    assert low.shape == want.shape and np.abs(low - want).max() < 0.1


# --- the spotter's runtime option ----------------------------------------------------


def test_runtime_option_is_validated_and_resolved():
    from udfs.batched_ocr import BatchedOcrSpotter

    with pytest.raises(ValueError, match="auto, onnxruntime, torch"):
        BatchedOcrSpotter(runtime="tensorrt")
    cpu = BatchedOcrSpotter(num_threads=1)
    assert cpu.runtime == "onnxruntime" and cpu._det_net is None  # auto on CPU
    assert BatchedOcrSpotter(runtime="auto", device="cpu").runtime == "onnxruntime"
    net = BatchedOcrSpotter(runtime="torch")
    assert net.runtime == "torch" and net.engine == "numpy" and not net.on_gpu
    assert net._det is None and net._rec_session is None  # no onnxruntime session


def _compare(want: list, got: list) -> None:
    """Same boxes (polygons to 1e-3 px), texts, confidences and has-text decision."""
    assert [r.box_count for r in got] == [r.box_count for r in want]
    for a, b in zip(want, got, strict=True):
        for p, q in zip(a.boxes, b.boxes, strict=True):
            assert np.abs(np.asarray(p.polygon) - np.asarray(q.polygon)).max() <= 1e-3
            assert p.text == q.text
            assert abs(p.confidence - q.confidence) < 1e-3
        assert ocr.reads_text(a) == ocr.reads_text(b)


@pytest.fixture(scope="module")
def spotters():
    """(onnxruntime, torch) spotters at a small detector size for the default run."""
    from udfs.batched_ocr import BatchedOcrSpotter

    kw = dict(num_threads=1, det_limit_side_len=320, look_side=320)
    return (BatchedOcrSpotter(runtime="onnxruntime", **kw),
            BatchedOcrSpotter(runtime="torch", **kw))


@pytest.mark.slow  # default: the same on real photos
def test_torch_runtime_spots_like_onnxruntime_on_generated_images(spotters):
    """Both pre-processing engines and both recogniser paddings on the torch runtime."""
    from tests.udfs.test_ocr import _photo, _with_text
    from udfs.batched_ocr import BatchedOcrSpotter

    images = [_with_text(Image.new("RGB", (400, 300), "white")), _with_text(_photo(1)),
              np.asarray(_photo(2))]
    ort_spotter, torch_spotter = spotters
    want = ort_spotter.spot(images, recognize=True)
    assert "PARROT" in want[0].text.upper()
    _compare(want, torch_spotter.spot(images, recognize=True))
    # The other two paths on the text image only (the default run's time).
    kw = dict(num_threads=1, det_limit_side_len=320, look_side=0, runtime="torch")
    engine = BatchedOcrSpotter(engine="torch", **kw)
    first = BatchedOcrSpotter(engine="numpy", **kw).spot(images[:1], recognize=True)
    _compare(first, engine.spot(images[:1], recognize=True))
    assert engine.engine == "torch" and engine.runtime == "torch"  # no fallback
    per_call = BatchedOcrSpotter(rec_padding="per_call", **kw)  # rapidocr's TextRecognizer
    want_call = BatchedOcrSpotter(rec_padding="per_call", **{**kw, "runtime": "onnxruntime"})
    _compare(want_call.spot(images[:1], recognize=True),
             per_call.spot(images[:1], recognize=True))


# The default run covers the real photographs with this 5-image version (at a small
# detector size); test_torch_runtime_spots_like_onnxruntime_on_all_real_photos (slow)
# runs the whole set.
def test_torch_runtime_spots_like_onnxruntime_on_real_photos(spotters):
    images = [rgb for _, rgb in _real_images(5, side=640)]
    ort_spotter, torch_spotter = spotters
    want = ort_spotter.spot(images, recognize=True)
    assert sum(r.box_count for r in want) > 0
    _compare(want, torch_spotter.spot(images, recognize=True))


@pytest.mark.slow
def test_torch_runtime_spots_like_onnxruntime_on_all_real_photos():
    """Every photograph of the real set, both looks. At most 512 px a side for the
    detector: the networks' equality does not depend on the input size, and the default
    (short side 1024 px) takes ~40 min in torch on 2 CPU cores, where torch is 2-5x
    slower than onnxruntime."""
    from udfs.batched_ocr import BatchedOcrSpotter

    sizes = {"det_limit_side_len": 512, "det_limit_type": "max", "look_side": 320}
    ort_spotter = BatchedOcrSpotter(runtime="onnxruntime", **sizes)
    torch_spotter = BatchedOcrSpotter(runtime="torch", **sizes)
    for name, rgb in _real_images(side=640):
        want = ort_spotter.spot([rgb], recognize=True)
        got = torch_spotter.spot([rgb], recognize=True)
        try:
            _compare(want, got)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc


@pytest.mark.gpu
def test_gpu_auto_runtime_is_torch_and_matches_cpu(spotters):
    import torch

    from tests.udfs.test_ocr import _photo, _with_text
    from udfs.batched_ocr import BatchedOcrSpotter
    from udfs.clip_models import upload_images

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dev = torch.device("cuda", 0)
    gpu = BatchedOcrSpotter(device=dev, det_limit_side_len=320, look_side=320)
    assert gpu.runtime == "torch" and gpu.engine == "torch" and gpu.on_gpu
    images = [_with_text(Image.new("RGB", (400, 300), "white")), _with_text(_photo(1)),
              np.asarray(_photo(2))] + [rgb for _, rgb in _real_images(5, side=640)]
    want = spotters[0].spot(images, recognize=True)
    for kw in ({}, {"device_images": upload_images(images, dev)}):
        got = gpu.spot(images, recognize=True, **kw)
        assert [r.box_count for r in got] == [r.box_count for r in want]
        assert [r.text for r in got] == [r.text for r in want]
        assert [ocr.reads_text(r) for r in got] == [ocr.reads_text(r) for r in want]
