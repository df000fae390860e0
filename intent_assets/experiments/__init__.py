"""A/B experiments: deterministic assignment, a simulator with a known truth, and the readout."""
