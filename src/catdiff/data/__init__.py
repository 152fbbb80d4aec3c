"""Datasets: synthetic (exact likelihood), digits, text (local and hub). See data/base.py."""
