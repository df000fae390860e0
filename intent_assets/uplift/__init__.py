"""Uplift: whom an offer changes, learned from randomized offers, and the policy it drives."""
