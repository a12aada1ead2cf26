"""Benchmark cluster assignment and per-cluster dedup at 10^4..10^6 rows on synthetic data.

Why: both stages run on every row, so they must scale linearly in rows and keep executor
memory flat. Each (size, phase) runs in a fresh subprocess so its peak RSS (VmHWM) is that
phase's own; a "gen" run of the same data stream and imports, doing no work, is the
baseline subtracted.

Data: L2-normalised 512-d vectors drawn cluster by cluster (within-cluster cosine ~0.5),
with `--dup-rate` of rows replaced by a noisy copy of another row of their cluster (cosine
~0.995). Rows are streamed, never all held: assignment sees `--batch`-row batches (like Arrow
batches of a pandas UDF), dedup sees one cluster at a time (like applyInPandas).

    python benchmarks/bench_cluster_dedup.py --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 512


def _stream(n: int, cluster_size: int, dup_rate: float, seed: int) -> Iterator[tuple]:
    """Yield (ids, embeddings, scores, n_injected) one synthetic cluster at a time."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(DIM)  # CLIP features share a mean direction
    start = 0
    c = 0
    while start < n:
        size = min(cluster_size, n - start)
        crng = np.random.default_rng([seed, c])
        centre = common + 2.0 * crng.standard_normal(DIM)
        centre /= np.linalg.norm(centre)
        x = centre + crng.standard_normal((size, DIM)) / np.sqrt(DIM)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        n_dup = int(round(dup_rate * size)) if size > 1 else 0
        if n_dup:
            targets = crng.choice(size, n_dup, replace=False)
            sources = crng.choice(np.setdiff1d(np.arange(size), targets), n_dup)
            noisy = x[sources] + 0.1 * crng.standard_normal((n_dup, DIM)) / np.sqrt(DIM)
            x[targets] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
        ids = np.arange(start, start + size, dtype=np.int64)
        yield ids, x.astype(np.float32), crng.random(size), n_dup
        start += size
        c += 1


def _batches(stream: Iterator[tuple], batch: int) -> Iterator[np.ndarray]:
    buf: list[np.ndarray] = []
    held = 0
    for _, x, _, _ in stream:
        buf.append(x)
        held += len(x)
        while held >= batch:
            allx = np.concatenate(buf)
            yield allx[:batch]
            buf, held = [allx[batch:]], held - batch
    if held:
        yield np.concatenate(buf)


def _peak_mib() -> float:
    """Peak RSS of this process. Linux VmHWM, because ru_maxrss survives exec and would
    report the (larger) driver's RSS at fork time."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------ worker (one subprocess)


def _worker(args: argparse.Namespace) -> dict:
    import faiss  # noqa: F401  (same imports in every phase, so the baseline is comparable)
    from scipy.sparse import csgraph  # noqa: F401

    from udfs import clustering, dedup

    n = args.n
    stream = _stream(n, args.cluster_size, args.dup_rate, args.seed)
    out: dict = {"phase": args.worker, "rows": n}
    seconds = 0.0
    with clustering.faiss_threads(args.threads):
        if args.worker == "gen-assign":
            for _ in _batches(stream, args.batch):
                pass
        elif args.worker == "gen-dedup":
            for _ in stream:
                pass
        elif args.worker == "assign":
            art = clustering.load_artifacts(args.artifacts)
            clustering.assign(art, np.zeros((1, DIM), np.float32))  # build the cached index
            counts = np.zeros(art.k, np.int64)
            for x in _batches(stream, args.batch):
                t0 = time.perf_counter()
                ids, _ = clustering.assign(art, x)
                seconds += time.perf_counter() - t0
                counts += np.bincount(ids, minlength=art.k)
            out["clusters_used"] = int((counts > 0).sum())
        elif args.worker == "dedup":
            dropped = injected = 0
            for ids, x, scores, n_dup in stream:
                t0 = time.perf_counter()
                keep = dedup.dedup_keep_mask(ids, x, scores, threshold=args.threshold)
                seconds += time.perf_counter() - t0
                dropped += int((~keep).sum())
                injected += n_dup
            out.update(dropped=dropped, injected=injected)
        elif args.worker in ("naive", "global"):
            parts = list(stream)
            ids, x, scores = (np.concatenate([p[i] for p in parts]) for i in range(3))
            t0 = time.perf_counter()
            if args.worker == "naive":
                keeper = _naive(ids, x, scores, args.threshold)
            else:
                keeper = dedup.near_duplicate_groups(ids, x, scores, threshold=args.threshold)
            seconds = time.perf_counter() - t0
            out["keeper_sha1"] = hashlib.sha1(keeper.tobytes()).hexdigest()
            out["dropped"] = int((keeper != ids).sum())
    out["seconds"] = seconds
    out["peak_mib"] = _peak_mib()
    return out


def _naive(ids: np.ndarray, x: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Reference: the full N x N similarity matrix, then components and keepers."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    sims = x @ x.T
    _, labels = connected_components(csr_matrix(sims >= np.float32(threshold)), directed=False)
    order = np.lexsort((ids, -scores, labels))
    first = np.r_[True, labels[order][1:] != labels[order][:-1]]
    keeper = np.empty_like(ids)
    keeper[order] = ids[order[first]][np.cumsum(first) - 1]
    return keeper


# ------------------------------------------------------------------ driver


def _run(args: argparse.Namespace, phase: str, n: int, artifacts: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", phase, "--n", str(n), "--artifacts", artifacts]
    for flag in ("cluster_size", "dup_rate", "seed", "batch", "threads", "threshold"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _train(args: argparse.Namespace, directory: str) -> float:
    from udfs import clustering

    sample = np.concatenate(
        [x for _, x, _, _ in _stream(args.train_size, args.cluster_size, 0.0, args.seed + 1)]
    )
    t0 = time.perf_counter()
    with clustering.faiss_threads(args.threads):
        art = clustering.train_artifacts(
            sample,
            pca_dim=args.pca_dim,
            k=args.k,
            niter=args.train_niter,
            nredo=1,
            min_points_per_centroid=1,
        )
    seconds = time.perf_counter() - t0
    clustering.save_artifacts(art, directory)
    return seconds


def _driver(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        train_s = _train(args, tmp)
        print(
            f"trained PCA {DIM}->{args.pca_dim} + k-means k={args.k} niter={args.train_niter} "
            f"on {args.train_size} rows in {train_s:.1f} s; faiss/BLAS threads={args.threads}, "
            f"dedup cluster size {args.cluster_size}, dup rate {args.dup_rate}",
            flush=True,
        )
        for n in sizes:
            for phase in ("assign", "dedup"):
                base = _run(args, f"gen-{phase}", n, tmp)
                r = _run(args, phase, n, tmp)
                rows.append((phase, n, r["seconds"], r["peak_mib"] - base["peak_mib"], r))
                print(f"  done {phase} n={n}: {r}", flush=True)
        naive = global_ = None
        if args.naive_size:
            naive = _run(args, "naive", args.naive_size, tmp)
            global_ = _run(args, "global", args.naive_size, tmp)
            base = _run(args, "gen-dedup", args.naive_size, tmp)

    print()
    print(f"{'phase':<7}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak MiB':>10}{'t/n ratio':>11}")
    first: dict[str, tuple[int, float]] = {}
    for phase, n, sec, mib, _ in rows:
        n0, s0 = first.setdefault(phase, (n, sec))
        ratio = (sec / s0) / (n / n0) if s0 > 0 else float("nan")
        print(f"{phase:<7}{n:>10}{sec:>10.2f}{n / sec:>12.0f}{mib:>10.0f}{ratio:>11.2f}")
    print("peak MiB: peak RSS of the phase minus the data-generation-only baseline.")
    print("t/n ratio: (time / time at the smallest size) / (rows / smallest rows); 1 = linear.")
    for phase, n, _, _, r in rows:
        if phase == "dedup":
            print(f"dedup n={n}: dropped {r['dropped']} rows, injected {r['injected']} duplicates")
    if naive and global_:
        same = naive["keeper_sha1"] == global_["keeper_sha1"]
        naive_mib = naive["peak_mib"] - base["peak_mib"]
        blocked_mib = max(global_["peak_mib"] - base["peak_mib"], 1.0)
        print()
        print(f"dedup of {args.naive_size} rows as ONE group (no clustering):")
        for name, r in (("naive N x N", naive), ("blocked", global_)):
            mib = r["peak_mib"] - base["peak_mib"]
            print(f"  {name:<12}{r['seconds']:>8.2f} s {mib:>8.0f} MiB  dropped {r['dropped']}")
        print(
            f"  naive/blocked time {naive['seconds'] / global_['seconds']:.2f}x, "
            f"memory {naive_mib / blocked_mib:.1f}x; identical keepers: {same}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--k", type=int, default=4000)
    p.add_argument("--pca-dim", type=int, default=256)
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--train-niter", type=int, default=10)
    p.add_argument("--cluster-size", type=int, default=500, help="rows per dedup group")
    p.add_argument("--dup-rate", type=float, default=0.05)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--batch", type=int, default=10_000, help="rows per assign call")
    p.add_argument("--threads", type=int, default=1, help="faiss/BLAS threads per process")
    p.add_argument("--naive-size", type=int, default=10_000, help="0 skips the baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--artifacts", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
    else:
        _driver(args)


if __name__ == "__main__":
    main()
