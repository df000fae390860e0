"""Modelling: splits, tuning, calibration and training of the purchase-intent model, and the
gates a candidate must pass before publication.

The modelling and gate rules are pure functions (`train`, `gates`, ...) that the assets, the
checks and `intent train` / `intent predict` call. The artifact format and scoring live in
`serving.model`.
"""
