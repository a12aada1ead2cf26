"""`python -m udfs.clustering convert PCA_JOBLIB CENTROIDS_NPY OUT_DIR`."""

from udfs.clustering.cli import main

raise SystemExit(main())
