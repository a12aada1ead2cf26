"""Score-stage throughput: OCR, CLIP, the full stage in a bare loop and through Spark.

    .venv/bin/python benchmarks/bench_score.py --images 96 --models tiny
    .venv/bin/python benchmarks/bench_score.py --images 24 --models real --rounds 2

Both sides decode the same JPEGs (a third are text posters, the rest text-free photos)
and run the same models with the same settings: the stage's default spotter (batched
PP-OCR detection, recognition of detected boxes), the CLIP image + text towers, the
aesthetic tower + MLP. `--models real` uses ViT-B-32 and ViT-L-14 (random weights here:
the same compute as the real ones). The bare loop is one process with every core
(`cpu_threads` = cores); Spark runs `local[N]` with one thread per task, so both use the
whole machine. Models are loaded before timing on both sides (Spark: a warm-up job right
before each timed run, on the Python workers that run then reuses: Spark ends Python
workers left idle for a minute, and a new one loads its models again). The Spark time
is the whole `deparrot score` run: planning, Arrow transfer, the Delta commit, the
rejects refresh and the report.

Printed, all from one run:

- the OCR networks' cost in onnxruntime and in torch (`--runtimes N` real photographs,
  `--runtimes-only`): what `score.spotter_options.runtime: auto` picks on CPU rests on it;
- the text filter's cost per image on CPU, before and after the OCR view and the second
  look (`--text-filter N` real photographs from benchmarks/ocr_real; `--text-filter-only`
  prints just that), beside CLIP B/32's image tower on the same images;

- images/s for OCR alone, CLIP alone (B/32 + L/14 + MLP), the full stage in the bare
  loop and through Spark, and the Spark/bare ratio (>= 0.9 is the goal);
- where the time goes: decode, OCR det (network, then DB post-process), OCR rec, B/32
  (image + text), L/14 (+ MLP) from the bare loop's own phases; Arrow (a Spark job that
  moves the same images through `mapInPandas` to Python workers and the same-sized rows
  back, no models) and Delta (appending the bare loop's rows to a Delta table), each as
  seconds and as a share of the bare loop;
- CPU seconds of both runs (the process tree: driver, JVM, Python workers), which other
  jobs on a shared machine do not inflate the way they inflate wall time;
- what the determinism of recognition costs: the batched spotter's recognition time with
  each crop padded by its own width (the default: an image's text cannot depend on its
  batch) against rapidocr's padding to the widest crop of each call, and for each how
  many images' text changed between two batch orders.

With `--rounds R` the bare loop and the Spark run alternate R times and medians are
reported (the machine may be shared). On a GPU the phases are wall times around
asynchronous calls that end in a host copy (embeddings, probability maps), so each phase
includes its own GPU work.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proc_cpu import live_processes  # noqa: E402  (benchmarks/, the script's folder)

from jobs import score  # noqa: E402
from jobs.config import load_config  # noqa: E402
from jobs.download import TABLE_SCHEMA as IMAGES_TABLE  # noqa: E402
from jobs.ingest import METADATA_SCHEMA  # noqa: E402
from jobs.lake import Lake  # noqa: E402
from jobs.sample import WORDS, photo_image, text_image  # noqa: E402
from jobs.session import get_spark  # noqa: E402

MODELS = {
    "tiny": ("deparrot-tiny-vit", "deparrot-tiny-vit"),
    "real": ("ViT-B-32", "ViT-L-14"),
}


def make_images(n: int, size: int, first_id: int = 1) -> list[tuple[int, bytes, str]]:
    rng = np.random.default_rng(first_id)
    out = []
    for i in range(n):
        if i % 3 == 0:
            words = WORDS[i % len(WORDS)]
            img, text = text_image(rng, size, words), f"{words} poster"
        else:
            img, text = photo_image(rng, size), "a photo of a landscape"
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append((first_id + i, buf.getvalue(), text))
    return out


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and its live descendants (Linux /proc)."""
    procs = live_processes()
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += procs[pid].cpu_s if pid in procs else 0.0
        todo += [p for p, info in procs.items() if info.ppid == pid]
    return total


def bare_loop(frame: pd.DataFrame, settings, batch_size: int) -> tuple[float, float, dict, list]:
    """(wall s, CPU s, phases, rows) of the stage's own per-batch function."""
    from udfs.score import _score_part, models_for

    spotter = models_for(settings).spotter
    det0 = dict(getattr(spotter, "seconds", {}))
    laps: dict[str, float] = {}
    rows: list[dict] = []
    c0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, len(frame), batch_size):
        rows += _score_part(frame.iloc[start:start + batch_size], settings, laps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    spent = {k: v - det0.get(k, 0.0) for k, v in getattr(spotter, "seconds", {}).items()}
    if spent:  # the batched spotter splits its time
        laps["ocr_det"] = spent.get("det", 0.0)
        laps["ocr_det_post"] = spent.get("det_post", 0.0)
        laps["ocr_rec"] = spent.get("rec", 0.0)
        laps["ocr_other"] = max(0.0, laps.pop("ocr") - sum(spent.values()))
    return wall, cpu, laps, rows


def arrow_only(spark, lake: Lake, ids: list[int], parts: int, dim: int) -> float:
    """Seconds for a Spark job that moves the images to Python workers and score-shaped
    rows back (Arrow both ways), without models or Delta writes."""
    from jobs.score import SCORES_SCHEMA
    from udfs.score import SCORE_FIELDS

    def body(batches):
        for b in batches:
            out = pd.DataFrame({c: [None] * len(b) for c in SCORE_FIELDS})
            out["sample_id"] = b["sample_id"].to_numpy()
            out["status"] = "ok"
            out["image_embedding"] = [np.zeros(dim, np.float32)] * len(b)
            out["ocr_boxes"] = [[] for _ in range(len(b))]
            yield out

    from pyspark.sql import functions as F

    images = lake.read("images").where(F.col("sample_id").isin(ids)) \
        .select("sample_id", "image").localCheckpoint()
    t0 = time.perf_counter()
    got = images.repartition(parts).mapInPandas(body, schema=SCORES_SCHEMA)
    got.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t0


def delta_only(spark, path: Path, rows: list[dict]) -> float:
    """Seconds to append the bare loop's rows to a Delta table (one commit)."""
    from jobs.score import SCORES_SCHEMA

    clean = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()}
             for r in rows]
    df = spark.createDataFrame(pd.DataFrame(clean), schema=SCORES_SCHEMA)
    df = df.localCheckpoint()  # build the frame before timing: only the write counts
    df.limit(0).write.format("delta").save(str(path))
    t0 = time.perf_counter()
    df.write.format("delta").mode("append").save(str(path))
    return time.perf_counter() - t0


def rec_padding_cost(jpegs: list[bytes], batch: int, cores: int, rounds: int) -> None:
    """What per-crop recognition padding (results independent of batches) costs against
    rapidocr's per-call padding, and how often each changes an image's text with the
    batch order."""
    from udfs.batched_ocr import batched_spotter
    from udfs.decode import decode_image

    arrays = [np.asarray(decode_image(b).image) for b in jpegs]
    spotters = {mode: batched_spotter(cpu_threads=cores, rec_padding=mode)
                for mode in ("per_crop", "per_call")}

    def texts(spotter, order, size):
        out = {}
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            for i, r in zip(idx, spotter.spot([arrays[i] for i in idx], recognize=True),
                            strict=True):
                out[i] = r.text
        return out

    forward = list(range(len(arrays)))
    backward = forward[::-1]
    seconds = {mode: [] for mode in spotters}
    changed = {}
    for _ in range(max(1, rounds)):
        for mode, spotter in spotters.items():
            before = spotter.seconds.get("rec", 0.0)
            first = texts(spotter, forward, batch)
            seconds[mode].append(spotter.seconds.get("rec", 0.0) - before)
            other = texts(spotter, backward, max(1, batch // 3))
            changed[mode] = sum(first[i] != other[i] for i in forward)
    med = {mode: statistics.median(v) for mode, v in seconds.items()}
    print(f"\n{'recognition padding':<40}{'rec s':>9}{'ratio':>8}{'texts changed':>15}")
    for mode in ("per_call", "per_crop"):
        label = {"per_call": "per call (rapidocr's batching)",
                 "per_crop": "per crop (independent of batches)"}[mode]
        print(f"{label:<40}{med[mode]:>9.2f}{med[mode] / max(med['per_call'], 1e-9):>8.2f}"
              f"{changed[mode]:>15}")
    print(f"(texts changed: images whose text differs between batches of {batch} in order "
          f"and of {max(1, batch // 3)} in reverse order, of {len(arrays)})")


# The text filter before the real-photograph work (benchmarks/ocr_real.py): the spotter on
# the CLIP-sized image, one look at a 512 px short side, guards in the spotter.
BEFORE_SPOTTER = dict(look_side=0, det_limit_side_len=512, box_thresh=0.6,
                      max_box_fraction=0.4, min_edge_density=0.03)


def real_photos(n: int) -> list[Path]:
    """`n` photographs spread over the real evaluation set (benchmarks/ocr_real)."""
    files = sorted((Path(__file__).resolve().parent / "ocr_real" / "images").glob("*.jpg"))
    return files[:: max(1, len(files) // n)][:n]


def text_filter_cost(n: int, threads: int, b32: str) -> None:
    """What the text filter costs per image on CPU, before and after the OCR view and
    the second look, on the real evaluation set's photographs (their own sizes), with
    CLIP B/32's image tower on the same images as the yardstick for a GPU estimate."""
    from udfs import clip_models
    from udfs.batched_ocr import BatchedOcrSpotter
    from udfs.decode import decode_image
    from udfs.images import ImageSettings, image_row
    from udfs.ocr_view import OcrViewSettings
    from udfs.resize import ResizeSettings, remove_border

    files = real_photos(n)
    blobs = [f.read_bytes() for f in files]

    def arrays(data, view):
        return np.asarray(decode_image(data).image) if data is not None else view

    timing: dict[str, float] = {}
    rows = {}
    for name, side in [(n, s) for _ in range(2)  # the second turn, warm, is kept
                       for n, s in (("before", 0), ("after", OcrViewSettings().side))]:
        settings = ImageSettings(ResizeSettings(image_size=256), ocr_view=OcrViewSettings(side))
        t0 = time.process_time()
        rows[name] = [image_row(k, "http://x/y", b, settings, "http") for k, b in enumerate(blobs)]
        timing[f"download {name}"] = time.process_time() - t0
    images = [remove_border(np.asarray(decode_image(r["image"]).image),
                            (r["original_width"], r["original_height"])) for r in rows["after"]]
    views = [arrays(r["ocr_image"], img) for r, img in zip(rows["after"], images, strict=True)]
    before = BatchedOcrSpotter(num_threads=threads, **BEFORE_SPOTTER)
    after = BatchedOcrSpotter(num_threads=threads)
    for name, spotter, inputs in (("OCR before (image, one look)", before, images),
                                  ("OCR after (view, two looks)", after, views)):
        spotter.spot(inputs[:1], recognize=True)
        t0 = time.process_time()
        for k in range(0, len(inputs), 8):
            spotter.spot(inputs[k:k + 8], recognize=True)
        timing[name] = time.process_time() - t0
    import torch

    torch.set_num_threads(threads)
    model = clip_models.load_clip(b32, "random", "cpu", "fp32", random_init_ok=True)
    clip_models.encode_images(model, images[:2], batch_size=8)
    t0 = time.process_time()
    clip_models.encode_images(model, images, batch_size=8)
    timing[f"CLIP {b32} image tower"] = time.process_time() - t0
    base = timing[f"CLIP {b32} image tower"]
    print(f"\ntext filter cost on CPU: {len(blobs)} real photographs "
          f"(benchmarks/ocr_real), {threads} thread(s), CPU ms per image")
    print(f"{'':<36}{'ms/img':>9}{'x CLIP':>9}")
    for name, sec in timing.items():
        print(f"{name:<36}{1000 * sec / len(blobs):>9.1f}{sec / base:>9.2f}")
    ocr_ratio = timing["OCR after (view, two looks)"] / timing["OCR before (image, one look)"]
    dl_ratio = timing["download after"] / timing["download before"]
    print(f"OCR after / before: {ocr_ratio:.2f}x; download after / before: {dl_ratio:.2f}x")


def runtime_cost(n: int, threads: int) -> None:
    """The OCR networks in onnxruntime against the same networks in torch
    (udfs/ppocr_torch.py) on CPU: what `runtime: auto` picks on a CPU worker rests on
    this. The default spotter on `n` real photographs at the OCR view's size."""
    import torch
    from PIL import Image

    from udfs.batched_ocr import BatchedOcrSpotter
    from udfs.ocr_view import OcrViewSettings

    files = real_photos(n)
    side = OcrViewSettings().side
    views = []
    for f in files:
        img = Image.open(f).convert("RGB")
        img.thumbnail((side, side))
        views.append(np.asarray(img))
    torch.set_num_threads(threads)
    seconds: dict[str, dict[str, float]] = {}
    texts = {}
    for runtime in ("onnxruntime", "torch"):
        spotter = BatchedOcrSpotter(runtime=runtime, num_threads=threads)
        spotter.spot(views[:1], recognize=True)  # load, first shapes
        spotter.seconds.clear()
        results = []
        for k in range(0, len(views), 4):
            results += spotter.spot(views[k:k + 4], recognize=True)
        seconds[runtime] = dict(spotter.seconds)
        texts[runtime] = [r.text for r in results]
    print(f"\nOCR runtimes on CPU: {len(views)} real photographs (benchmarks/ocr_real, "
          f"long side <= {side}), {threads} thread(s), ms per image")
    print(f"{'':<14}{'det':>9}{'rec':>9}{'total':>9}{'x onnxruntime':>15}")
    base = sum(seconds["onnxruntime"].values())
    for runtime, sec in seconds.items():
        total = sum(sec.values())
        print(f"{runtime:<14}{1000 * sec.get('det', 0) / len(views):>9.0f}"
              f"{1000 * sec.get('rec', 0) / len(views):>9.0f}"
              f"{1000 * total / len(views):>9.0f}{total / base:>15.2f}")
    same = sum(a == b for a, b in zip(texts["onnxruntime"], texts["torch"], strict=True))
    print(f"same text on {same} of {len(views)} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="more config overrides, e.g. score.spotter=rapidocr")
    parser.add_argument("--text-filter", type=int, default=24, metavar="N",
                        help="real photographs for the text filter's cost (0: skip)")
    parser.add_argument("--text-filter-only", action="store_true",
                        help="only the text filter's cost (no Spark)")
    parser.add_argument("--runtimes", type=int, default=8, metavar="N",
                        help="real photographs for OCR in onnxruntime vs torch (0: skip)")
    parser.add_argument("--runtimes-only", action="store_true",
                        help="only the OCR runtimes' comparison (no Spark)")
    args = parser.parse_args()

    if args.runtimes:
        runtime_cost(args.runtimes, args.cores)
    if args.runtimes_only:
        return

    b32, l14 = MODELS[args.models]
    if args.text_filter:
        text_filter_cost(args.text_filter, 1, "ViT-B-32")
    if args.text_filter_only:
        return
    work = Path(tempfile.mkdtemp(prefix="deparrot-bench-score-"))
    # The project's local settings (e.g. Delta snapshot partitions), then the bench's own.
    cfg = load_config(Path(__file__).resolve().parents[1] / "conf" / "local.yaml", [
        f"spark.master=local[{args.cores}]", "spark.conf.spark.ui.showConsoleProgress=false",
        f"spark.conf.spark.sql.shuffle.partitions={args.cores}",
        f"spark.conf.spark.sql.warehouse.dir={work / 'warehouse'}",
        f"storage.root={work / 'lake'}", f"score.clip_model={b32}",
        "score.clip_pretrained=random", f"score.aesthetic_clip_model={l14}",
        "score.aesthetic_clip_pretrained=random", "score.aesthetic_weights=random",
        "score.random_init_ok=true", f"score.batch_size={args.batch_size}",
        f"score.arrow_batch_size={args.batch_size * 4}", f"score.partitions={args.cores}",
        *args.extra,
    ])
    rounds = [make_images(args.images, args.size, 1 + r * 1_000_000)
              for r in range(args.rounds)]
    n = args.images

    bare_settings = dataclasses.replace(score.score_settings(cfg.score), cpu_threads=args.cores)

    def frame_of(images):
        return pd.DataFrame({"sample_id": [i for i, _, _ in images],
                             "image": [b for _, b, _ in images],
                             "text": [t for *_, t in images],
                             "similarity": [None] * len(images),
                             "aesthetic": [None] * len(images)})

    from udfs.score import _score_part

    _score_part(frame_of(rounds[0]).iloc[:2], bare_settings)  # load the models

    spark, _ = get_spark(cfg.spark)
    spark.sparkContext.setLogLevel("ERROR")
    lake = Lake(spark, cfg)
    lake.ensure("metadata", METADATA_SCHEMA)
    lake.ensure("images", IMAGES_TABLE)

    def load(batch):
        spark.createDataFrame(
            [(i, f"http://x/{i}", t, "laion400m", "f", i) for i, _, t in batch],
            "sample_id long, url string, text string, family string, source_file string, "
            "source_row long").writeTo(lake.ref("metadata").name).append()
        spark.createDataFrame([(i, b, "ok") for i, b, _ in batch],
                              "sample_id long, image binary, status string") \
            .writeTo(lake.ref("images").name).append()

    me = os.getpid()
    bare_walls, bare_cpus, spark_walls, spark_cpus, phases, reports = [], [], [], [], [], []
    for r, images in enumerate(rounds):
        wall, cpu, laps, rows = bare_loop(frame_of(images), bare_settings, args.batch_size)
        assert len(rows) == n
        bare_walls.append(wall)
        bare_cpus.append(cpu)
        phases.append(laps)
        # Warm up right before timing: Spark ends Python workers idle for a minute (the
        # bare loop takes longer), and a new worker loads its models again.
        load([(900_000_000 + 1000 * r + i, b, t) for i, b, t in images[: 2 * args.cores]])
        score.run(spark, cfg)
        load(images)
        c0, t0 = tree_cpu_seconds(me), time.perf_counter()
        report = score.run(spark, cfg)
        spark_walls.append(time.perf_counter() - t0)
        spark_cpus.append(tree_cpu_seconds(me) - c0)
        assert report.pending == n, report
        reports.append(report)
    dim = len(rows[0]["image_embedding"])
    arrow = arrow_only(spark, lake, [i for i, _, _ in rounds[-1]], args.cores, dim)
    delta = delta_only(spark, work / "bench_delta", rows)
    spark.stop()

    med = statistics.median
    bare, on_spark = med(bare_walls), med(spark_walls)
    keys = sorted({k for p in phases for k in p})
    phase = {k: med([p.get(k, 0.0) for p in phases]) for k in keys}
    ocr_s = sum(v for k, v in phase.items() if k.startswith("ocr"))
    clip_s = phase.get("b32", 0.0) + phase.get("masked", 0.0) + phase.get("l14", 0.0)
    from udfs.score import models_for

    m = models_for(bare_settings)
    print(f"\n{n} images {args.size}px x {args.rounds} round(s) (medians), "
          f"models={args.models} ({b32} + {l14}), batch {args.batch_size}, {args.cores} cores, "
          f"device {m.device}, spotter {cfg.score.spotter} "
          f"({type(m.spotter).__name__}), recognize={cfg.score.recognize}")
    print(f"Spark stage phases (s), last round: {reports[-1].seconds}")
    for r in range(args.rounds):
        print(f"round {r + 1}: bare {bare_walls[r]:.2f} s ({bare_cpus[r]:.2f} CPU s), Spark "
              f"{spark_walls[r]:.2f} s ({spark_cpus[r]:.2f} CPU s), wall ratio "
              f"{bare_walls[r] / spark_walls[r]:.2f}, CPU ratio {bare_cpus[r] / spark_cpus[r]:.2f}")
    print(f"\n{'throughput':<40}{'seconds':>9}{'images/s':>10}{'ratio':>8}")
    print(f"{'OCR alone (det + rec, bare loop)':<40}{ocr_s:>9.2f}{n / ocr_s:>10.2f}")
    print(f"{'CLIP alone (B/32 + L/14 + MLP)':<40}{clip_s:>9.2f}{n / clip_s:>10.2f}")
    print(f"{'full stage, bare loop':<40}{bare:>9.2f}{n / bare:>10.2f}{1:>8.2f}")
    print(f"{'full stage, Spark (deparrot score)':<40}{on_spark:>9.2f}{n / on_spark:>10.2f}"
          f"{bare / on_spark:>8.2f}")
    inner = med([r.seconds["work_and_write"] for r in reports])
    print(f"{'  of which scoring + Delta append':<40}{inner:>9.2f}{n / inner:>10.2f}"
          f"{bare / inner:>8.2f}")
    print(f"{'CPU seconds, bare loop':<40}{med(bare_cpus):>9.2f}")
    print(f"{'CPU seconds, Spark (driver+JVM+workers)':<40}{med(spark_cpus):>9.2f}"
          f"{'':>10}{med(bare_cpus) / med(spark_cpus):>8.2f}")
    walls = [b / s for b, s in zip(bare_walls, spark_walls, strict=True)]
    cpus = [b / s for b, s in zip(bare_cpus, spark_cpus, strict=True)]
    print(f"Spark / bare loop, median of the per-round ratios: wall {med(walls):.2f}, "
          f"CPU {med(cpus):.2f} (>= 0.9 is the goal)")

    names = {"decode": "decode (Pillow)", "upload": "upload to device",
             "ocr_det": "OCR det (network)", "ocr_det_post": "OCR det post-process",
             "ocr_rec": "OCR rec (crops + network)", "ocr_other": "OCR other",
             "ocr": "OCR (det + rec)", "b32": "B/32 (image + text)",
             "masked": "B/32 on text-masked images (T-MARS)",
             "l14": "L/14 (+ aesthetic MLP)", "rows": "result rows"}
    print(f"\n{'where the time goes':<40}{'seconds':>9}{'share of bare':>15}")
    for k in ("decode", "upload", "ocr_det", "ocr_det_post", "ocr_rec", "ocr_other", "ocr",
              "b32", "masked", "l14", "rows"):
        if k in phase:
            print(f"{names[k]:<40}{phase[k]:>9.2f}{phase[k] / bare:>15.3f}")
    print(f"{'Arrow (Spark <-> Python, no models)':<40}{arrow:>9.2f}{arrow / bare:>15.3f}")
    print(f"{'Delta (append the rows, one commit)':<40}{delta:>9.2f}{delta / bare:>15.3f}")
    rec_padding_cost([b for _, b, _ in rounds[-1]], args.batch_size, args.cores, args.rounds)


if __name__ == "__main__":
    main()
