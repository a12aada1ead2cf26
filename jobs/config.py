"""Typed, strict job configuration.

Defaults live in the dataclasses below; a YAML file overlays them (a file may name
another with `extends:` to overlay it first), then `--set dotted.key=value` pairs overlay
the result. Unknown keys are errors that name the key, so a typo never silently falls
back to a default on a thousand-GPU run.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.errors import UserError
from udfs.bounds import at_least, within
from udfs.decode import DEFAULT_MAX_PIXELS
from udfs.fetch import FetchSettings
from udfs.ocr_view import OcrViewSettings
from udfs.parrot import ParrotSettings
from udfs.resize import ResizeSettings
from udfs.score import ScoreSettings
from udfs.storage import is_absolute, join, resolve
from udfs.sync_score import SyncModel, SyncSettings


class ConfigError(UserError):
    """A configuration file or override that cannot be applied."""


@dataclass
class SparkConfig:
    # Empty master means "let spark-submit / the cluster decide".
    master: str = "local[2]"
    app_name: str = "deparrot"
    # Extra Spark conf applied only when deparrot builds the session itself.
    conf: dict[str, str] = field(default_factory=dict)
    # Extra Maven coordinates resolved with the Delta jars for a locally built session.
    extra_packages: list[str] = field(default_factory=list)
    # Log level of a session deparrot builds itself (ALL..OFF). Failures reach the user
    # as one line or a Python traceback anyway; executor stack traces in the log only
    # bury them. Set WARN or INFO to debug.
    log_level: str = "FATAL"


@dataclass
class StorageConfig:
    # Root folder (or URI) for path-based Delta tables; empty means managed tables
    # (Unity Catalog / Hive metastore) addressed by catalog.schema.table only.
    root: str = "data/lake"
    catalog: str = ""
    schema: str = "deparrot"
    # Shared folder (or URI) for everything that is not a table: cluster artifacts,
    # vocabulary CSVs, the report, export shards, training logs. Every relative path in
    # the config (cluster.artifacts, report.out, ...) is resolved against it, never
    # against the working directory, so a stage on another cluster finds what an
    # earlier stage wrote. Empty = `<root>/_files` for path tables; managed tables need
    # it set, e.g. a Unity Catalog Volume /Volumes/<catalog>/<schema>/deparrot.
    files: str = ""

    def files_root(self) -> str:
        """The shared folder, absolute (a local root is made absolute once, here)."""
        if self.files:
            return _absolute(self.files)
        if self.root:
            return join(_absolute(self.root), "_files")
        raise ConfigError(
            "storage.files is empty and tables are managed (storage.root is empty): set "
            "storage.files to shared storage every cluster sees, e.g. "
            "/Volumes/<catalog>/<schema>/deparrot")


@dataclass
class TablesConfig:
    metadata: str = "metadata"
    rejects: str = "rejects"
    images: str = "images"
    scores: str = "scores"
    clusters: str = "clusters"
    dedup: str = "dedup"
    subset: str = "laion_debiased"
    # Written by `deparrot analyze` (the paper's parrot statistics).
    parrot: str = "parrot"
    parrot_summary: str = "parrot_summary"
    clip_by_text: str = "clip_by_text"
    cluster_ocr: str = "cluster_ocr"
    funnel: str = "funnel"
    ngrams: str = "ngrams"
    policy_counts: str = "policy_counts"  # rows each recipe.text_policy would keep
    # Written by `deparrot sync-score`.
    sync_scores: str = "sync_scores"
    sync_word_scores: str = "sync_word_scores"
    # Written by `deparrot train`: one row per training invocation.
    training_runs: str = "training_runs"
    # Written by `deparrot explore`: curators' reviews of single decisions (append-only).
    reviews: str = "reviews"


# ingest.input_format values (jobs/ingest.py, jobs/ingest_text.py).
INPUT_FORMATS = ("auto", "parquet", "csv", "csv.gz", "tsv", "tsv.gz", "json", "jsonl", "txt")


@dataclass
class IngestConfig:
    # A file or a folder of them (any depth) in `input_format`.
    input: str = ""
    # auto (by file name; a folder: its parquet files, else its one text format) |
    # parquet | csv | csv.gz | tsv | tsv.gz | json (an array of objects) | jsonl | txt
    # (one URL a line, no caption). csv/tsv need a header row, as in img2dataset.
    input_format: str = "auto"
    # auto | laion400m | laion2b | datacomp (laion2b also reads any URL + caption file)
    family: str = "auto"
    # The source columns of url and caption (img2dataset's --url_col / --caption_col),
    # in place of the family's own; empty = the family's (URL/TEXT, url/text).
    url_col: str = ""
    caption_col: str = ""
    # Normalised numeric columns a row must fill when its file has that column (an empty
    # WIDTH cell is missing_number:width). A file without the column at all (img2dataset's
    # URL + caption files) is not rejected for it: its rows get a null width/height.
    required_numbers: list[str] = field(default_factory=lambda: ["width", "height"])
    # Reported image sides above this are "absurd_size" rejects.
    max_side: float = 100_000.0
    require_text: bool = True

    def __post_init__(self) -> None:
        at_least(self, 1, "max_side")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, "
                             f"got {self.input_format!r}")


@dataclass(frozen=True)
class DownloadConfig:
    # http: fetch the metadata URLs; webdataset / parquet: read img2dataset output at `shards`.
    source: str = "http"
    shards: str = ""
    # How img2dataset output is matched to the metadata: url | sample_id (SAMPLE_ID saved
    # with img2dataset's --save_additional_columns).
    match_by: str = "url"
    concurrency: int = 16  # requests in flight per Spark task
    partitions: int = 0  # tasks per commit; 0 = Spark's default parallelism
    rows_per_commit: int = 100_000  # each chunk of this many rows is one Delta commit
    # The executors' own settings, with their defaults in udfs/: the fetcher (timeouts,
    # retries, SSRF guard, opt-out headers) and the img2dataset-style resizer.
    fetch: FetchSettings = field(default_factory=FetchSettings)
    resize: ResizeSettings = field(default_factory=ResizeSettings)
    # The original again at text-detection size, for the spotter (udfs/ocr_view.py):
    # side 0 stores none, and OCR reads the CLIP-sized image.
    ocr_view: OcrViewSettings = field(default_factory=OcrViewSettings)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        at_least(self, 1, "concurrency", "rows_per_commit", "max_pixels")
        at_least(self, 0, "partitions")


@dataclass(frozen=True)
class ScoreConfig(ScoreSettings):
    """The executors' ScoreSettings (models, spotter, batch size) plus how the job runs."""

    arrow_batch_size: int = 512  # rows per Arrow batch handed to the Python worker
    partitions: int = 0  # tasks per commit; 0 = Spark's default parallelism
    rows_per_commit: int = 100_000

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, 1, "arrow_batch_size", "rows_per_commit")
        at_least(self, 0, "partitions")

    def settings(self) -> ScoreSettings:
        """Only the executor part: what gets pickled into the UDF and keys its cache."""
        names = [f.name for f in dataclasses.fields(ScoreSettings)]
        return ScoreSettings(**{n: getattr(self, n) for n in names})


@dataclass
class ClusterConfig:
    # Folder with pca.npz, centroids.npy and manifest.json (written by cluster-train);
    # relative = under storage.files, like every file location below.
    artifacts: str = "clusters"
    # Or the paper's published files: pca.joblib (a pickle: needs trust_pickle) or a .npz
    # converted once, and centroids.npy (4000 x 256 float32). Both set = use them.
    published_pca: str = ""
    published_centroids: str = ""
    trust_pickle: bool = False
    pca_dim: int = 256
    k: int = 4000
    niter: int = 300
    nredo: int = 10
    seed: int = 42
    min_points_per_centroid: int = 10_000
    max_points_per_centroid: int = 200_000
    sample_size: int = 1_000_000  # embeddings drawn with Spark for training
    # cluster-assign refuses embeddings from another model than the artifacts were
    # built from (their manifest's embedding_model vs the scores table's CLIP model):
    # distances between different models' features mean nothing. True overrides.
    allow_other_embedding_model: bool = False
    use_gpu: bool = True  # faiss on GPU when one is present
    faiss_threads: int = 1  # per Python worker; Spark already runs one task per core

    def __post_init__(self) -> None:
        at_least(self, 1, "pca_dim", "k", "niter", "nredo", "min_points_per_centroid",
                 "max_points_per_centroid", "sample_size")
        at_least(self, 0, "faiss_threads")


# Which images with text the recipe drops (jobs/recipe.py, docs/reference.md "Text policies").
TEXT_POLICIES = ("any_text", "parrots", "tmars")


@dataclass
class RecipeConfig:
    """The paper's filters and dedup; publish keeps rows that pass every one."""

    # any_text: the paper's rule, every image with text goes; parrots: only images whose
    # caption repeats their text (normalised CoTR > max_cotr); tmars: only images whose
    # CLIP score with the text masked is < min_masked_clip_score (T-MARS).
    text_policy: str = "any_text"
    max_cotr: float = 0.0  # parrots: 0.0 = any shared normalised word drops the pair
    min_masked_clip_score: float = 0.3  # tmars: kept when masked_clip_score >= this
    max_text_boxes: int = 0  # "Empty OCR results"
    min_clip_score: float = 0.3  # strictly greater than
    min_aesthetic: float = 4.5  # strictly greater than
    dedup_threshold: float = 0.95  # cosine of B/32 image embeddings within a cluster
    dedup_block_size: int = 4096
    # A cluster with more rows is split into sub-clusters first (udfs/subclusters.py):
    # one task then compares at most about this many rows, O(cap^2) work and cap x 2 KB.
    dedup_max_cluster_rows: int = 20_000
    dedup_by_url: bool = True
    dedup_by_image_hash: bool = True

    def __post_init__(self) -> None:
        if self.text_policy not in TEXT_POLICIES:
            raise ValueError(f"text_policy must be one of {', '.join(TEXT_POLICIES)}, "
                             f"got {self.text_policy!r}")
        within(self, 0.0, 1.0, "max_cotr")  # a ratio of words
        within(self, -1.0, 1.0, "min_masked_clip_score")  # a cosine
        at_least(self, 0, "max_text_boxes")
        within(self, -1.0, 1.0, "min_clip_score")  # a cosine
        within(self, 0.0, 10.0, "min_aesthetic")  # the predictor's 1-10 scale
        within(self, 0.0, 1.0, "dedup_threshold")
        at_least(self, 1, "dedup_block_size")
        at_least(self, 2, "dedup_max_cluster_rows")


@dataclass
class PublishConfig:
    # The subset is partitioned by `part` = kmeans // clusters_per_partition; each
    # partition is one Delta commit.
    clusters_per_partition: int = 100

    def __post_init__(self) -> None:
        at_least(self, 1, "clusters_per_partition")


@dataclass(frozen=True)
class AnalyzeConfig:
    """`deparrot analyze`: the paper's parrot statistics and n-gram vocabularies."""

    # Fuzzy CoTR: Levenshtein distance and minimum word length (udfs/parrot.py).
    parrot: ParrotSettings = field(default_factory=ParrotSettings)
    top_k: int = 400_000  # entries kept per n-gram vocabulary (the paper's size)
    # CSV copies of the vocabularies (word,count), readable by `deparrot sync-score` and
    # the paper's own scripts; empty = no export.
    export_dir: str = "vocab"


@dataclass(frozen=True)
class SyncScoreConfig(SyncSettings):
    """`deparrot sync-score`: the executors' SyncSettings (rendering, template, batch) plus
    which models and which vocabulary."""

    # open_clip models: [{model: ViT-B-32, pretrained: openai}, {model: ..., pretrained:
    # /path/epoch_32.pt, alias: ours}]; pretrained "random" needs random_init_ok.
    models: tuple[SyncModel, ...] = (SyncModel("ViT-B-32", "openai"),)
    # "" = the `ngrams` table written by `deparrot analyze`; or a CSV (word in the first
    # column, as the paper's vocabularies) or a text file with one word per line.
    vocabulary: str = ""
    vocab: str = "caption_1gram"  # which vocabulary of the ngrams table
    top_n: int = 0  # the first N entries (by rank / file order); 0 = all
    sample_n: int = 0  # or a seeded random sample of N entries; 0 = no sampling
    seed: int = 0
    partitions: int = 0  # tasks; 0 = Spark's default parallelism
    arrow_batch_size: int = 256  # words per Arrow batch handed to a Python worker

    def settings(self) -> SyncSettings:
        names = [f.name for f in dataclasses.fields(SyncSettings)]
        return SyncSettings(**{n: getattr(self, n) for n in names})


@dataclass(frozen=True)
class ReportConfig:
    """`deparrot report`: a static HTML page with PNG plots, opened from the file system."""

    out: str = "report"
    score_bins: int = 40  # histogram bins for CLIP and aesthetic scores
    cotr_bins: int = 20
    contact_sheet: int = 12  # thumbnails per group (removed for text, kept)
    top_clusters: int = 20  # clusters in the per-cluster OCR-type figure
    top_ngrams: int = 25


@dataclass(frozen=True)
class ExportConfig:
    """`deparrot export`: the subset as training shards in img2dataset's webdataset layout.

    Executors write the shards, so `out` must be the same folder on every node: a shared
    or mounted filesystem (/dbfs/..., NFS) or an fsspec URL (s3://...). The driver reads
    it too (to skip finished shards and write manifest.json).
    """

    out: str = "shards"
    # subset: the debiased subset; images: every downloaded image with its metadata
    # caption (the un-debiased baseline to compare a training run against).
    source: str = "subset"
    subset_version: int = -1  # Delta version of the subset to export; -1 = the latest
    shard_size: int = 10_000  # samples per shard (img2dataset's default)
    format: str = "webdataset"  # webdataset ({shard}.tar) | parquet ({shard}.parquet)
    image: str = "passthrough"  # passthrough (the stored bytes) | reencode (JPEG)
    jpeg_quality: int = 95  # image: reencode only
    val_fraction: float = 0.0  # held out by a hash of SAMPLE_ID, written under val/
    seed: int = 0  # salt of the split and shard-order hashes
    arrow_batch_size: int = 256  # rows (with image bytes) per Arrow batch to a writer task

    def __post_init__(self) -> None:
        choices = {"source": ("subset", "images"), "format": ("webdataset", "parquet"),
                   "image": ("passthrough", "reencode")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.shard_size < 1 or self.arrow_batch_size < 1:
            raise ValueError("shard_size and arrow_batch_size must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


@dataclass
class TrainConfig:
    """`deparrot train`: open_clip's own trainer (open_clip_train) under TorchDistributor.

    Defaults are a laptop run; conf/train_paper.yaml holds the paper's recipe.
    """

    # torch_distributor: TorchDistributor (torchrun processes or Spark barrier tasks);
    # in_process: open_clip_train in the driver's own Python process (one process, no
    # torchrun start-up: a laptop, the miniature experiment). horovod is refused.
    launcher: str = "torch_distributor"
    model: str = "ViT-B-32"
    pretrained: str = ""  # open_clip tag or checkpoint; "" = from scratch (the paper)
    # An open_clip model config (embed_dim, vision_cfg, text_cfg) registered as `model` in
    # every worker; {} = a built-in model or deparrot's tiny test model.
    model_config: dict[str, Any] = field(default_factory=dict)
    # Brace patterns of shards; "" = the patterns in `export.out`/manifest.json.
    train_data: str = ""
    val_data: str = ""
    dataset_type: str = "webdataset"
    train_num_samples: int = 0  # samples per epoch; 0 = the manifest's train count
    batch_size: int = 64  # per process: global batch = batch_size * num_processes
    lr: float = 5e-4
    epochs: int = 1
    warmup: int = 100  # steps of linear warm-up before the cosine schedule
    lr_scheduler: str = "cosine"
    wd: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    precision: str = "auto"  # auto = amp on GPU, fp32 on CPU; or any open_clip precision
    image_size: int = 0  # force_image_size; 0 = the model's own
    local_loss: bool = True
    gather_with_grad: bool = True
    workers: int = 2  # dataloader workers per process (<= shards / processes)
    # Under storage.files when relative; a local or mounted folder every training process
    # sees (/Volumes/..., /dbfs/...): open_clip_train writes it with plain file calls.
    logs: str = "train"
    name: str = "deparrot"  # fixed run name: logs/<name>/checkpoints; re-runs resume it
    resume: bool = True  # --resume latest
    save_frequency: int = 1  # epochs between checkpoints
    log_every_n_steps: int = 100
    num_processes: int = 1  # one per GPU on a cluster; CPU processes (gloo) locally
    local_mode: bool = True  # True: processes on the driver; False: Spark barrier tasks
    use_gpu: bool = False
    seed: int = 0
    extra_args: list[str] = field(default_factory=list)  # passed to open_clip_train as is
    # Sync. Score of the final checkpoint over a CSV vocabulary (word[,count], e.g. from
    # `deparrot analyze`); "" = skip. The first sync_top_k words are scored.
    sync_words: str = ""
    sync_top_k: int = 100

    def __post_init__(self) -> None:
        if self.launcher == "horovod":
            raise ValueError(
                "launcher horovod is not supported: horovod 0.28.1 (its last release, June "
                "2023) fails to build against torch >= 2.1 ('You need C++17'); use "
                "torch_distributor (TorchDistributor replaces Databricks' HorovodRunner)")
        if self.launcher not in ("torch_distributor", "in_process"):
            raise ValueError("launcher must be torch_distributor or in_process, got "
                             f"{self.launcher!r}")
        if self.launcher == "in_process" and (self.num_processes != 1 or not self.local_mode):
            raise ValueError("launcher in_process runs one process on the driver: it needs "
                             f"num_processes 1 and local_mode true, got {self.num_processes} "
                             f"and {self.local_mode}")
        for name in ("num_processes", "batch_size", "epochs", "sync_top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class SampleConfig:
    out: str = "data/sample"
    rows: int = 120
    seed: int = 7
    image_size: int = 256
    # URLs in the generated metadata point here; the demo serves `out`/images on it.
    base_url: str = "http://127.0.0.1:8000/"
    # Write image files too (the 1M-row ingest benchmark only needs metadata).
    images: bool = True
    # Parquet files to split the metadata into.
    files: int = 2
    # laion: the recipe's cases (jobs/sample.py); miniature: visual, parrot and mixed
    # pairs where reading is learnable (jobs/miniature_world.py).
    kind: str = "laion"
    # Metadata columns of kind laion: laion400m (SAMPLE_ID, URL, TEXT, sizes, scores) or
    # url_caption (URL, TEXT and a pandas index column, like img2dataset's test files).
    shape: str = "laion400m"
    # Metadata files: parquet | csv | tsv (with a header row).
    format: str = "parquet"

    def __post_init__(self) -> None:
        if self.kind not in ("laion", "miniature"):
            raise ValueError(f"kind must be laion or miniature, got {self.kind!r}")
        if self.shape not in ("laion400m", "url_caption"):
            raise ValueError(f"shape must be laion400m or url_caption, got {self.shape!r}")
        if self.format not in ("parquet", "csv", "tsv"):
            raise ValueError(f"format must be parquet, csv or tsv, got {self.format!r}")


@dataclass
class MiniatureConfig:
    """`deparrot miniature` (jobs/miniature.py): the paper's effect on a generated world."""

    out: str = "data/miniature"  # its world, lake, shards, checkpoints: a local folder
    # 40% parrots: reading then takes fewer samples (measured, seed 0: 32k samples at 40%
    # read top-1 0.88; 40k at 30% 0.81; 24k at 30% 0.38), so the whole run fits 15 min.
    rows: int = 1200  # pairs in the world
    parrot_share: float = 0.4  # the caption is the word printed in the image
    mixed_share: float = 0.2  # a small sign the caption ignores
    image_size: int = 128  # of the generated images (the model sees model_input px)
    samples: int = 32_000  # samples every training run sees
    quick_rows: int = 800  # --quick
    quick_samples: int = 20_000
    model: str = "deparrot-mini-rn"  # udfs/clip_models.py MINI_READER_CONFIG
    model_input: int = 64
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 20
    policies: list[str] = field(default_factory=lambda: list(TEXT_POLICIES))
    seed: int = 0
    eval_per_class: int = 4  # held-out visual images per visual caption
    font_path: str = ""  # for the rendered words; "" = matplotlib's DejaVu Sans Bold

    def __post_init__(self) -> None:
        at_least(self, 1, "rows", "samples", "quick_rows", "quick_samples", "batch_size",
                 "eval_per_class", "model_input", "image_size")
        within(self, 0.0, 1.0, "parrot_share")
        within(self, 0.0, 1.0, "mixed_share")
        if self.parrot_share + self.mixed_share > 1.0:
            raise ValueError("parrot_share + mixed_share must be at most 1")
        unknown = [p for p in self.policies if p not in TEXT_POLICIES]
        if unknown or not self.policies:
            raise ValueError(f"policies must be some of {', '.join(TEXT_POLICIES)}, "
                             f"got {self.policies}")

    def render_font(self) -> str:
        from udfs.render import default_bold_font_path

        return self.font_path or default_bold_font_path()


@dataclass
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    sync_score: SyncScoreConfig = field(default_factory=SyncScoreConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    miniature: MiniatureConfig = field(default_factory=MiniatureConfig)

    def shared(self, path: str) -> str:
        """A configured file location on shared storage: absolute paths and URIs as they
        are, relative ones under `storage.files` (see StorageConfig)."""
        if not path or is_absolute(path):
            return path
        return resolve(self.storage.files_root(), path)


def _absolute(path: str) -> str:
    """Local roots become absolute once (the anchor a person typed); URIs stay as given."""
    return path if is_absolute(path) else os.path.abspath(path)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, overlaid by `path` (following `extends:`), overlaid by `key=value` strings."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_with_extends(Path(path), seen=())
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects dotted.key=value, got {item!r}")
        _set_dotted(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return _build(Config, data, prefix="")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _read_with_extends(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config files extend each other in a loop: {path}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"cannot read config file {path}: {detail}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded
    base = _read_with_extends(path.parent / str(parent), seen + (path,))
    return _deep_merge(base, loaded)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c`; inside a free-form mapping (spark.conf) the rest of the key is one name."""
    parts = key.split(".")
    node, schema = data, Config
    i = 0
    while i < len(parts) - 1:
        part = parts[i]
        hint = typing.get_type_hints(schema).get(part) if schema is not None else None
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
        node = child
        i += 1
        if typing.get_origin(hint) is dict:
            node[".".join(parts[i:])] = value
            return
        schema = hint if dataclasses.is_dataclass(hint) else None
    node[parts[-1]] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            "unknown config key(s): " + ", ".join(prefix + k for k in unknown)
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # the settings' own checks (__post_init__)
        message = str(exc)
        if message.split(" ", 1)[0] in names:  # "batch_size must be ..." -> the full key
            raise ConfigError(f"{prefix}{message}") from exc
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from exc


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner is None and len(args) != len(value):
            raise ConfigError(f"{key} must have {len(args)} items, got {value!r}")
        return tuple(_coerce(inner or args[i], v, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in hint)
            raise ConfigError(f"{key} must be one of {allowed}, got {value!r}") from None
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is Any:
        return value
    if hint is str:
        if isinstance(value, bool):  # YAML turns `true` into a bool; Spark conf wants text
            return "true" if value else "false"
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value
