"""Prefect tasks of the pipeline, one module per lifecycle stage."""
