"""How good a purchase-intent model is: metrics, the reliability report and baselines.

Pure functions over arrays and DataFrames (labels, sample weights, probabilities, segment
columns); the Dagster assets and checks that call them live elsewhere.
"""
