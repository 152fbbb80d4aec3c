"""Sizes catdiff's networks from a model config section: preset → width/depth/heads, then the
bidirectional/causal transformer or the joint token + latent-slot transformer.

It reads the section's attributes (preset, d_model, n_layers, n_heads, mlp_ratio, ...) and knows
nothing of the config module, of methods or of data: methods call these, never the classes.
"""

from __future__ import annotations

from ..errors import ConfigError
from .joint import JointConfig, JointTransformer
from .transformer import PRESETS, Transformer, TransformerConfig


def model_size(model_cfg) -> dict:
    """{d_model, n_layers, n_heads}: the preset's, overridden by any size the section sets."""
    if model_cfg.preset not in PRESETS:
        raise ConfigError(f"unknown model.preset {model_cfg.preset!r}; choose one of {sorted(PRESETS)}")
    size = dict(PRESETS[model_cfg.preset])
    for k in ("d_model", "n_layers", "n_heads"):
        v = getattr(model_cfg, k)
        if v is not None:
            size[k] = v
    if size["d_model"] % size["n_heads"]:
        raise ConfigError(f"model.d_model ({size['d_model']}) must be divisible by model.n_heads ({size['n_heads']})")
    return size


def build_network(model_cfg, *, vocab_in: int, vocab_out: int, seq_len: int, causal: bool,
                  time_cond: bool | None = None, cond_dim: int = 0, context_dim: int = 0) -> Transformer:
    """The shared transformer sized by the model config."""
    return Transformer(TransformerConfig(
        vocab_size=vocab_in, out_size=vocab_out, seq_len=seq_len, mlp_ratio=model_cfg.mlp_ratio,
        dropout=model_cfg.dropout, causal=causal,
        time_cond=model_cfg.time_cond if time_cond is None else time_cond,
        tie_weights=model_cfg.tie_weights, abs_pos=model_cfg.abs_pos, cond_dim=cond_dim, context_dim=context_dim,
        local_mix=0 if causal else model_cfg.local_mix,  # a causal model sees its own token: no need
        checkpoint=model_cfg.checkpoint, **model_size(model_cfg)))


def build_joint_network(model_cfg, *, vocab_in: int, vocab_out: int, seq_len: int, n_slots: int,
                        slot_dim: int) -> JointTransformer:
    """The joint token + latent-slot transformer (models.joint, MM-DiT style) sized by the model config."""
    return JointTransformer(JointConfig(
        vocab_size=vocab_in, out_size=vocab_out, seq_len=seq_len, n_slots=n_slots, slot_dim=slot_dim,
        mlp_ratio=model_cfg.mlp_ratio, abs_pos=model_cfg.abs_pos, local_mix=model_cfg.local_mix,
        **model_size(model_cfg)))
