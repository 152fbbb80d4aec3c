"""catdiff: diffusion models on categorical data.

Masked (MDLM), autoregressive, embedding (Diffusion-LM, CDCD, Difformer, CATDM), latent-coupled
(LDDM) and latent-conditioned (DisCo-Diff) models behind one API, with exact-likelihood benchmarks.
"""

__version__ = "0.1.0"
