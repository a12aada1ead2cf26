"""`python -m udfs.clustering convert`: the published pickle -> pickle-free artifacts."""

from __future__ import annotations

import argparse

from udfs.clustering.artifacts import DEFAULT_EMBEDDING_MODEL
from udfs.clustering.published import convert_published


def main(argv: list[str] | None = None) -> int:
    """`convert`: turn the published pca.joblib + centroids.npy into pickle-free artifacts."""
    parser = argparse.ArgumentParser(prog="python -m udfs.clustering")
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("convert", help="trusted one-off conversion of pca.joblib")
    conv.add_argument("pca_joblib")
    conv.add_argument("centroids_npy")
    conv.add_argument("out_dir")
    conv.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL)
    args = parser.parse_args(argv)
    art = convert_published(
        args.pca_joblib, args.centroids_npy, args.out_dir, embedding_model=args.embedding_model
    )
    print(f"wrote {args.out_dir}: d_in={art.d_in} pca_dim={art.pca_dim} k={art.k}")
    return 0

