"""Which local files count as model checkpoints; torch-free so the driver can check paths."""

CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
