"""Executor-side code: model loading, predict functions and pandas UDF bodies.

Nothing here builds a SparkSession or reads config files: jobs/ hand settings in.
"""
