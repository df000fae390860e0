"""Modelling: splits, tuning, calibration and training of the purchase-intent model.

Pure functions only (no Dagster import): the assets and `intent train` / `intent predict` call
them. The artifact format and scoring live in `serving.model`.
"""
