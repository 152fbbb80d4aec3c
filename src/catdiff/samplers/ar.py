"""Autoregressive sampling options: ancestral draws left to right, one network call per free
position (the KV-cached loop lives with the causal network, methods/ar.py). No `steps`: the
sequence length fixes the calls. It knows no network, method or data.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import DrawOptions, SampleOptions

KINDS = ("ancestral",)


@dataclass
class Options(SampleOptions, DrawOptions):
    """`sample:` section of autoregressive models."""
