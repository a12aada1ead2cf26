from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from udfs import ocr


def _photo(seed: int, h: int = 300, w: int = 400, texture: str = "none") -> Image.Image:
    """Gradient + blurred blobs + noise (+ stripes / grass): busy but text-free."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx / w + yy / h)[..., None] / 2
    arr = rng.uniform(0, 255, 3) * (1 - t) + rng.uniform(0, 255, 3) * t
    base = Image.fromarray(arr.astype(np.uint8))
    blobs, mask = Image.new("RGB", (w, h)), Image.new("L", (w, h))
    for _ in range(5):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = (x0, y0, x0 + rng.uniform(40, 200), y0 + rng.uniform(40, 200))
        ImageDraw.Draw(blobs).ellipse(box, fill=tuple(int(v) for v in rng.uniform(0, 255, 3)))
        ImageDraw.Draw(mask).ellipse(box, fill=220)
    base = Image.composite(
        blobs.filter(ImageFilter.GaussianBlur(6)), base, mask.filter(ImageFilter.GaussianBlur(6))
    )
    arr = np.asarray(base).astype(np.float32)
    if texture == "stripes":
        arr += 30 * np.sin(xx * 2 * np.pi / 9)[..., None]
    elif texture == "grass":
        streaks = Image.fromarray(rng.integers(0, 255, (h // 6, w), dtype=np.uint8)).resize((w, h))
        arr += (np.asarray(streaks).astype(np.float32) - 128)[..., None] * 0.5
    arr += rng.normal(0, 5, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _with_text(img: Image.Image, text: str = "PARROT SALE 50%", size: int = 40) -> np.ndarray:
    """Text straight on the background, black or white by the local brightness."""
    img = img.copy()
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=size)
    x0, y0, x1, y1 = draw.textbbox((20, 120), text, font=font)
    local = np.asarray(img.convert("L"))[y0:y1, x0:x1].mean()
    draw.text((20, 120), text, font=font, fill=(10, 10, 10) if local > 128 else (245, 245, 245))
    return np.asarray(img)


@pytest.fixture(scope="module")
def spotter() -> ocr.TextSpotter:
    return ocr.make_spotter("rapidocr")


def _letters(text: str) -> set[str]:
    return {c for c in text.upper() if c.isalpha()}


def test_reads_text_on_white(spotter):
    img = _with_text(Image.new("RGB", (400, 300), "white"))
    (res,) = spotter.spot([img], recognize=True)
    assert res.box_count >= 1
    assert 0.0 < res.text_area_fraction < 0.5
    assert "PARROT" in res.text.upper()
    assert all(b.text for b in res.boxes) and all(0 < b.confidence <= 1 for b in res.boxes)


def test_text_on_photo_detect_then_read(spotter):
    img = _with_text(_photo(1))
    det, rec = spotter.spot([img], recognize=False)[0], spotter.spot([img], recognize=True)[0]
    assert det.box_count >= 1 and det.text_area_fraction > 0
    assert det.text == "" and all(b.text is None for b in det.boxes)
    assert rec.box_count >= 1
    assert len(_letters(rec.text) & _letters("PARROT SALE")) >= 5


def test_plain_photos_have_no_text(spotter):
    """The spotter returns candidates; the stage's text rule counts none of them here,
    read or detection only (the guards moved from the spotter into ocr.TextRule)."""
    plains = [
        _photo(2),
        _photo(3, texture="stripes"),
        _photo(4, texture="grass"),
        # Flat studio backdrop: the bundled detector's raw output covers it with one box.
        np.full((300, 400, 3), 245, np.uint8),
    ]
    rule = ocr.TextRule()
    read = spotter.spot([np.asarray(p) for p in plains], recognize=True)
    assert [rule.has_text(r) for r in read] == [False] * 4
    detected = spotter.spot([np.asarray(p) for p in plains])
    assert [rule.has_text(r, recognized=False) for r in detected] == [False] * 4


def test_real_photo_has_no_text(spotter):
    spec = importlib.util.find_spec("sklearn")  # scikit-learn ships two real photos
    path = Path(spec.origin).parent / "datasets/images/china.jpg" if spec else None
    if path is None or not path.is_file():
        pytest.skip("scikit-learn sample photo not installed")
    photo = Image.open(path).convert("RGB").resize((384, 256))
    (res,) = spotter.spot([np.asarray(photo)], recognize=True)
    assert not ocr.TextRule().has_text(res)  # candidates may stay; none counts


def test_batch_keeps_order_and_accepts_grey(spotter):
    text = _with_text(Image.new("RGB", (400, 300), "white"))
    grey = np.asarray(Image.fromarray(text).convert("L"))
    results = spotter.spot([np.full((300, 400, 3), 128, np.uint8), grey, np.zeros((0, 0, 3))])
    assert [r.box_count > 0 for r in results] == [False, True, False]
    assert (results[1].image_height, results[1].image_width) == (300, 400)


def test_engine_built_once_per_process(spotter):
    assert ocr.make_spotter("rapidocr") is spotter
    assert ocr.make_spotter(ocr.RAPIDOCR_SPOTTER) is spotter  # the alias names the same entry
    assert ocr.make_spotter("rapidocr", {"box_thresh": 0.7}) is not spotter
    assert ocr.make_spotter("rapidocr", {"box_thresh": 0.7}) is ocr.make_spotter(
        "rapidocr", {"box_thresh": 0.7}
    )


class DummySpotter:
    def __init__(self, label: str, device=None, cpu_threads: int = 0) -> None:
        self.label, self.device, self.cpu_threads = label, device, cpu_threads

    def spot(self, images, recognize=False):
        box = ocr.OcrBox([(0, 0), (4, 0), (4, 2), (0, 2)], self.label if recognize else None, 1)
        return [ocr.OcrResult([box], 4, 4) for _ in images]


def test_spotters_are_named_by_import_path():
    s = ocr.make_spotter(f"{__name__}:DummySpotter", {"label": "hi"}, device="cpu",
                         cpu_threads=3)
    assert isinstance(s, ocr.TextSpotter)
    assert (s.device, s.cpu_threads) == ("cpu", 3)  # the factory gets the device and threads
    (res,) = s.spot([np.zeros((4, 4, 3), np.uint8)], recognize=True)
    assert res.text == "hi" and res.text_area_fraction == pytest.approx(0.5, abs=0.3)
    with pytest.raises(ValueError, match="cannot import"):
        ocr.make_spotter("deepsolo_not_installed:make")
    with pytest.raises(ValueError, match="no callable"):
        ocr.make_spotter(f"{__name__}:missing_factory")
    with pytest.raises(ValueError, match="import path"):
        ocr.check_spotter_path("deepsolo")


def test_result_geometry():
    a = [(0.0, 0.0), (50.0, 0.0), (50.0, 20.0), (0.0, 20.0)]
    b = [(25.0, 0.0), (75.0, 0.0), (75.0, 20.0), (25.0, 20.0)]
    assert ocr.polygon_area(a) == pytest.approx(1000.0)
    res = ocr.OcrResult([ocr.OcrBox(a, "x", 0.9), ocr.OcrBox(b, None, 0.8)], 100, 100)
    assert res.box_count == 2 and res.text == "x"
    # Overlap counted once: union 75x20 of 100x100 (rasterisation adds <= 1 px per edge).
    assert res.text_area_fraction == pytest.approx(0.15, abs=0.01)
    whole = [(0.0, 0.0), (500.0, 0.0), (500.0, 500.0), (0.0, 500.0)]
    assert ocr.OcrResult([ocr.OcrBox(whole, None, 1.0)], 100, 100).text_area_fraction == 1.0
    assert ocr.OcrResult([], 0, 0).text_area_fraction == 0.0


def test_edge_density_separates_strokes_from_flat():
    flat = np.full((40, 200), 200.0, np.float32)
    text = np.asarray(_with_text(Image.new("RGB", (400, 300), "white")), np.float32)
    grey = text @ np.array([0.299, 0.587, 0.114], np.float32)
    box = [(15.0, 115.0), (380.0, 115.0), (380.0, 170.0), (15.0, 170.0)]
    assert ocr.edge_density(flat, [(0, 0), (199, 0), (199, 39), (0, 39)]) == 0.0
    assert ocr.edge_density(grey, box) > ocr.DEFAULT_MIN_EDGE_DENSITY


# --- the text rule ---------------------------------------------------------------


def _box(text, confidence=0.9):
    return ocr.OcrBox([(0, 0), (4, 0), (4, 2), (0, 2)], text, confidence)


@pytest.mark.parametrize(("text", "confidence", "counts"), [
    ("SALE", 0.9, True), ("7", 0.9, True), ("中文", 0.9, True), ("é", 0.6, True),
    ("SALE", 0.3, False),  # read, but below the bar
    (None, 0.9, False), ("", 0.9, False), ("...", 0.99, False), ("-|*", 0.99, False),
])
def test_text_rule_needs_a_letter_or_digit_read_confidently(text, confidence, counts):
    assert ocr.box_reads_text(_box(text, confidence), 0.5) is counts
    assert ocr.reads_text(ocr.OcrResult([_box(None), _box(text, confidence)], 4, 4), 0.5) is counts


def test_text_rule_threshold_is_configurable():
    res = ocr.OcrResult([_box("A1", 0.62)], 4, 4)
    assert ocr.reads_text(res, 0.6) and not ocr.reads_text(res, 0.7)
    assert ocr.reads_text(res) is (ocr.DEFAULT_TEXT_MIN_CONFIDENCE <= 0.62)


# --- the batched spotter ------------------------------------------------------------


@pytest.fixture(scope="module")
def batched() -> ocr.TextSpotter:
    return ocr.make_spotter("batched", cpu_threads=1)


def _iou(a, b) -> float:
    from shapely.geometry import Polygon

    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


def _test_images() -> list[np.ndarray]:
    return [
        _with_text(Image.new("RGB", (400, 300), "white")),
        _with_text(_photo(1)),
        _with_text(_photo(5, h=256, w=256), "OPEN DAILY", size=24),
        np.asarray(_photo(2)),
        np.asarray(_photo(3, texture="stripes")),
        np.asarray(_photo(4, texture="grass")),
        np.full((300, 400, 3), 245, np.uint8),
    ]


def test_batched_is_the_default_and_built_once(batched):
    from udfs.batched_ocr import BatchedOcrSpotter

    assert ocr.DEFAULT_SPOTTER == ocr.BATCHED_SPOTTER
    assert isinstance(batched, BatchedOcrSpotter) and isinstance(batched, ocr.TextSpotter)
    assert ocr.make_spotter(ocr.BATCHED_SPOTTER, cpu_threads=1) is batched


@pytest.mark.slow  # the default run: test_batched_letterboxing_does_not_move_boxes
def test_batched_agrees_with_per_image_rapidocr(batched):
    """One look (the detector on the image, as RapidOCR runs it) gives RapidOCR's boxes
    and text; the default second look only adds boxes (every first-look box stays)."""
    from udfs.batched_ocr import BatchedOcrSpotter

    images = _test_images()
    # Compared where boxes are clear-cut: a weak box over a whole flat image (detector
    # score 0.5-0.6) moves with the letterbox padding, so both run with the box
    # threshold and guards of the spotters before the text rule took them over.
    guarded = dict(box_thresh=0.6, max_box_fraction=0.4, min_edge_density=0.03)
    spotter = ocr.RapidOcrSpotter(**guarded)
    one_look = BatchedOcrSpotter(look_side=0, num_threads=1, **guarded)
    for recognize in (False, True):
        ref = spotter.spot(images, recognize=recognize)
        both = batched.spot(images, recognize=recognize)
        for a, b in zip(ref, both, strict=True):
            assert b.box_count >= a.box_count
            for box in a.boxes:
                assert max(_iou(box.polygon, o.polygon) for o in b.boxes) > 0.9
        got = one_look.spot(images, recognize=recognize)
        assert [r.box_count > 0 for r in got] == [r.box_count > 0 for r in ref]
        for a, b in zip(ref, got, strict=True):
            assert (b.image_height, b.image_width) == (a.image_height, a.image_width)
            assert b.box_count == a.box_count
            for box in a.boxes:  # every reference box has its twin
                assert max(_iou(box.polygon, o.polygon) for o in b.boxes) > 0.9
        if recognize:
            assert [r.text for r in got] == [r.text for r in ref]
            assert "PARROT" in got[0].text.upper() and "OPEN" in got[2].text.upper()


@pytest.mark.slow  # default: test_batched_agrees_with_per_image_rapidocr
def test_batched_letterboxing_does_not_move_boxes(batched):
    """Mixed sizes share a padded batch; the boxes equal those of exact-size batches."""
    from udfs.batched_ocr import BatchedOcrSpotter

    images = [_with_text(_photo(6, h=300, w=400)), _with_text(_photo(7, h=260, w=330)),
              _with_text(Image.new("RGB", (500, 280), "white"))]
    exact = BatchedOcrSpotter(bucket=0, num_threads=1).spot(images)
    padded = batched.spot(images)
    assert [r.box_count for r in padded] == [r.box_count for r in exact]
    for a, b in zip(exact, padded, strict=True):
        for box in a.boxes:
            assert max(_iou(box.polygon, o.polygon) for o in b.boxes) > 0.9


@pytest.mark.slow  # default: tests/udfs/test_ppocr_torch.py (torch on real photos)
def test_batched_torch_engine_matches_numpy(batched):
    """The GPU code path (torch preprocessing + ONNX Runtime I/O binding) on CPU, both
    looks, against the numpy path at the same (test-sized) detector side."""
    from udfs.batched_ocr import BatchedOcrSpotter
    from udfs.clip_models import upload_images

    images = _test_images()
    torch_path = BatchedOcrSpotter(engine="torch", num_threads=1, det_limit_side_len=512)
    numpy_path = BatchedOcrSpotter(engine="numpy", num_threads=1, det_limit_side_len=512)
    want = numpy_path.spot(images, recognize=True)
    for kw in ({}, {"device_images": upload_images(images, "cpu")}):
        got = torch_path.spot(images, recognize=True, **kw)
        assert torch_path.engine == "torch"  # it did not fall back
        assert [r.text for r in got] == [r.text for r in want]
        for a, b in zip(want, got, strict=True):
            assert b.box_count == a.box_count
            for box in a.boxes:
                assert max(_iou(box.polygon, o.polygon) for o in b.boxes) > 0.9


def test_batched_keeps_boxes_read_as_nothing(batched, monkeypatch):
    img = _with_text(Image.new("RGB", (400, 300), "white"))
    det = batched.spot([img])[0]
    assert det.box_count >= 1

    class Unreadable:
        """The recogniser's parts the spotter calls, reading every crop as nothing."""

        rec_image_shape = (3, 48, 320)

        def resize_norm_img(self, img, max_wh_ratio):
            return np.zeros((3, 48, int(48 * max_wh_ratio)), np.float32)

        def session(self, batch):
            return batch

        def postprocess_op(self, preds, return_word_box=False, **kwargs):
            return [("", 0.8)] * len(preds), None

    monkeypatch.setattr(batched, "_rec", Unreadable())
    (res,) = batched.spot([img], recognize=True)
    assert res.box_count == det.box_count  # the boxes stay, for analysis
    assert all(b.text is None and b.confidence == 0.8 for b in res.boxes)
    assert res.text == "" and not ocr.reads_text(res)


def test_det_size_follows_rapidocr():
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    from udfs.batched_ocr import det_size

    rng = np.random.default_rng(0)
    for limit_type in ("min", "max"):
        pre = DetPreProcess(512, limit_type)
        for h, w in rng.integers(20, 1500, (40, 2)):
            resized = pre.resize(np.zeros((h, w, 3), np.uint8))
            assert det_size(int(h), int(w), 512, limit_type) == resized.shape[:2]


def test_batched_spotter_rejects_bad_options():
    from udfs.batched_ocr import BatchedOcrSpotter

    with pytest.raises(ValueError, match="engine"):
        BatchedOcrSpotter(engine="tensorrt")
    with pytest.raises(ValueError, match="limit_type"):
        BatchedOcrSpotter(det_limit_type="mid")


@pytest.mark.gpu
def test_gpu_batched_spotter_matches_cpu(batched):
    import torch

    from udfs.clip_models import upload_images

    gpu = ocr.make_spotter("batched", device=torch.device("cuda", 0))
    # runtime auto on CUDA: the networks in torch, so the GPU path whatever onnxruntime
    # build is installed (tests/udfs/test_ppocr_torch.py compares the runtimes).
    assert gpu.engine == "torch" and gpu.runtime == "torch"
    images = _test_images()
    want = batched.spot(images, recognize=True)
    for kw in ({}, {"device_images": upload_images(images, torch.device("cuda", 0))}):
        got = gpu.spot(images, recognize=True, **kw)
        assert [r.box_count for r in got] == [r.box_count for r in want]
        assert [ocr.reads_text(r) for r in got] == [ocr.reads_text(r) for r in want]
        assert "PARROT" in got[0].text.upper()


@pytest.mark.gpu
def test_gpu_spotter_reads_text():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    # Falls back to CPU if this onnxruntime build lacks CUDA.
    gpu = ocr.make_spotter("rapidocr", device=torch.device("cuda"))
    (res,) = gpu.spot([_with_text(Image.new("RGB", (400, 300), "white"))], recognize=True)
    assert "PARROT" in res.text.upper()
