"""Sampling loops with one contract, one module per family (masked, gaussian, coupled, edm):

    sample(denoise, state, grid, *, generator, callback, ...) -> SampleResult(state, nfe, info)

`denoise` is any callable (a trained model wrapped by its method, or an exact oracle), `grid`
comes from the family's `grid(...)` sized by the network-call budget `steps`, and each family's
`Options` is the typed `sample:` section of the methods that use it. Samplers know no networks.
"""

from .base import MAX_STEPS, DrawOptions, SampleOptions, SampleResult, StepOptions, draw_categorical

__all__ = ["MAX_STEPS", "DrawOptions", "SampleOptions", "SampleResult", "StepOptions", "draw_categorical"]
