"""The function TorchDistributor runs in every training process: open_clip's own trainer.

deparrot does not have a training loop: `open_clip_train.main.main(argv)` (shipped in the
open_clip_torch wheel) is the loop, with its webdataset reader, local loss, AMP, cosine
schedule, checkpoints and `--resume latest`. This module only prepares each process:

- custom open_clip model configs (the tiny test model, or `train.model_config`) live in
  a process's memory, so they are registered here, in every worker, before open_clip
  builds the model;
- open_clip_train's setup_logging sets *every* logger that exists to INFO, torch's
  dynamo and distributed loggers included, and prints the model and one line per
  logged step: a thousand lines for a small run. Unless DEPARROT_VERBOSE is set
  (`--verbose`), torch's loggers go back to WARNING, the console shows warnings only,
  and rank 0 shows one progress line per run instead (epoch, rate, time left). Every
  INFO line still goes to the run's out.log, where `deparrot train` reads the losses;
- open_clip_train 3.3 wraps the model in DistributedDataParallel with
  `device_ids=[device]` even on CPU, which torch refuses for CPU modules; for CPU runs
  with several processes (gloo), the wrapper drops device_ids for CPU modules while the
  trainer runs (GPU runs are untouched);
- open_clip_train's sample shuffle (`webdataset.shuffle`) seeds itself from the process
  id and the clock, so two runs with one `--seed` see samples in different orders and
  end with different models (the miniature's read top-1 moved by 0.05 between runs).
  While the trainer runs, that shuffle is seeded from torch's generator, which
  open_clip_train seeds from `--seed` and the rank: a run is repeatable; ranks,
  dataloader workers and epochs still shuffle differently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch


@contextlib.contextmanager
def _cpu_ddp_accepts_device_ids() -> Iterator[None]:
    """Let open_clip_train build DDP around a CPU model (see the module docstring)."""
    original = torch.nn.parallel.DistributedDataParallel

    class CpuFriendlyDDP(original):  # type: ignore[misc, valid-type]
        def __init__(self, module: torch.nn.Module, device_ids: Any = None, *args: Any,
                     **kwargs: Any) -> None:
            if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
                device_ids = None
            super().__init__(module, device_ids, *args, **kwargs)

    torch.nn.parallel.DistributedDataParallel = CpuFriendlyDDP
    try:
        yield
    finally:
        torch.nn.parallel.DistributedDataParallel = original


class _ProgressLine(logging.Handler):
    """open_clip_train's step lines as one line per run: epoch, share done, rate, time
    left. Rewritten in place at a terminal; elsewhere printed once, when the run ends."""

    _STEP = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+) \((\d+)%\)\].*?([\d.]+)/s,")

    def __init__(self, epochs: int, stream: Any = None) -> None:
        super().__init__(logging.INFO)
        self.epochs, self.stream = max(1, epochs), stream or sys.stderr
        self.start, self.line = time.monotonic(), ""

    def emit(self, record: logging.LogRecord) -> None:
        step = self._STEP.search(record.getMessage())
        if not step:
            return
        epoch, percent, rate = int(step[1]), int(step[4]), float(step[5])
        done = min(1.0, (epoch + percent / 100) / self.epochs)
        elapsed = time.monotonic() - self.start
        left = elapsed * (1 - done) / done if done > 0 else 0.0
        self.line = (f"[train] epoch {min(epoch + 1, self.epochs)}/{self.epochs}, "
                     f"{done:.0%} done, {rate:,.0f} samples/s, ~{left:.0f} s left")
        if self.stream.isatty():
            self.stream.write("\r" + self.line)
            self.stream.flush()

    def finish(self) -> None:
        if self.line:
            took = time.monotonic() - self.start
            end = "\r" if self.stream.isatty() else ""
            self.stream.write(f"{end}[train] {self.epochs} epoch(s) in {took:.0f} s; "
                              f"last: {self.line.split(', ', 1)[1]}\n")
            self.stream.flush()


def _epochs(argv: list[str]) -> int:
    return int(argv[argv.index("--epochs") + 1]) if "--epochs" in argv else 1


@contextlib.contextmanager
def _quiet_console(argv: list[str]) -> Iterator[None]:
    """open_clip_train's logging with torch's loggers at WARNING and, on the console,
    warnings and one progress line only (out.log keeps every INFO line)."""
    import open_clip_train.main as trainer

    original = trainer.setup_logging
    if os.environ.get("DEPARROT_VERBOSE", "") not in ("", "0"):
        yield
        return
    progress = _ProgressLine(_epochs(argv)) if os.environ.get("RANK", "0") == "0" else None

    def setup_logging(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        for name in list(logging.root.manager.loggerDict):
            if name == "torch" or name.startswith("torch."):
                logging.getLogger(name).setLevel(logging.WARNING)
        for handler in logging.root.handlers:
            if type(handler) is logging.StreamHandler:  # the console, not out.log
                handler.setLevel(logging.WARNING)
        if progress is not None:
            logging.root.addHandler(progress)

    trainer.setup_logging = setup_logging
    try:
        yield
    finally:
        trainer.setup_logging = original
        if progress is not None:
            logging.root.removeHandler(progress)
            progress.finish()


class _SeededShuffle:
    """webdataset's sample shuffle, seeded from torch's generator, which open_clip_train
    seeds from --seed and the rank: a dataloader worker's seed (drawn anew each epoch,
    distinct per worker), or a draw from the generator without workers."""

    def __init__(self, bufsize: int = 1000, initial: int = 100) -> None:
        self.bufsize, self.initial = bufsize, initial

    def __call__(self, src: Iterator[Any]) -> Iterator[Any]:
        import random

        from torch.utils.data import get_worker_info
        from webdataset.filters import _shuffle

        info = get_worker_info()
        seed = info.seed if info is not None else int(torch.randint(2**62, ()).item())
        return _shuffle(src, self.bufsize, self.initial, random.Random(seed))


@contextlib.contextmanager
def _seeded_sample_shuffle() -> Iterator[None]:
    """open_clip_train calls `webdataset.shuffle(bufsize=, initial=)`: seed it (see the
    module docstring)."""
    import webdataset

    original = webdataset.shuffle

    def shuffle(bufsize: int = 1000, initial: int = 100, **_: Any) -> _SeededShuffle:
        return _SeededShuffle(bufsize, initial)

    webdataset.shuffle = shuffle
    try:
        yield
    finally:
        webdataset.shuffle = original


def register_models(model_configs: dict[str, dict[str, Any]]) -> None:
    """Register `model_configs` (and deparrot's tiny model) with open_clip in this process."""
    from udfs.clip_models import _open_clip, register_model_config

    for name, config in model_configs.items():
        register_model_config(name, config)
    _open_clip()


def train_main(argv: list[str], model_configs: dict[str, dict[str, Any]],
               cpu_threads: int = 0) -> dict[str, Any]:
    """TorchDistributor's target: run open_clip_train with `argv` in this process.

    Returns a small summary (rank 0's is what TorchDistributor hands back).
    """
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    register_models(model_configs)
    from open_clip_train.main import main

    with (_cpu_ddp_accepts_device_ids(), _quiet_console(argv),
          _seeded_sample_shuffle()):
        code = main(list(argv))
    if code not in (None, 0):
        raise RuntimeError(f"open_clip_train stopped with status {code} (see its log)")
    return {"rank": int(os.environ.get("RANK", "0")),
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


@contextlib.contextmanager
def _loggers_restored() -> Iterator[None]:
    """Put every logger's level and the root's handlers back after open_clip_train:
    its setup_logging sets all loggers (py4j's in a driver) to INFO and adds handlers to
    the root logger, which would copy later runs into this run's out.log. The caller's
    own root handlers step aside while it runs, so each line is printed once."""
    manager = logging.root.manager
    levels = {name: logging.getLogger(name).level for name in list(manager.loggerDict)}
    root_level, handlers = logging.root.level, list(logging.root.handlers)
    for handler in handlers:
        logging.root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in list(logging.root.handlers):
            logging.root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            logging.root.addHandler(handler)
        logging.root.setLevel(root_level)
        for name in list(manager.loggerDict):
            logger = logging.getLogger(name)
            logger.setLevel(levels.get(name, logging.NOTSET))


def train_in_process(argv: list[str], model_configs: dict[str, dict[str, Any]]
                     ) -> dict[str, Any]:
    """open_clip_train in the calling process, one rank, no torchrun (`launcher:
    in_process`). A WORLD_SIZE (or SLURM_NTASKS) above 1 in this process's environment
    would make open_clip_train wait for other ranks, so it is refused."""
    from open_clip_train.distributed import is_using_distributed

    if is_using_distributed():
        raise RuntimeError("launcher in_process: this process's environment describes a "
                           "distributed launch (WORLD_SIZE or SLURM_NTASKS > 1); use "
                           "launcher torch_distributor")
    with _loggers_restored():
        return train_main(argv, model_configs)
