"""Executor-side code: model loading, predict functions and pandas UDF bodies. Never builds a SparkSession or reads config files."""
