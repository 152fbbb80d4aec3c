"""The contract every method implements: a training loss, a likelihood bound and a sampler.

A method owns its network(s) and wires process → network → parameterization → loss; it knows
nothing of optimisers, checkpoints, data loading or the command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .. import losses
from ..conditioning import Condition
from ..errors import ConfigError
from ..samplers.base import StepOptions
from ..structs import Batch, LossOutput, SampleOutput


@dataclass
class NoOptions:
    """Methods without options of their own use this empty schema."""


@dataclass(frozen=True)
class Stage:
    """One training stage a method declares (`Method.stages`).

    trains: names of the submodules this stage updates (None: all; the rest is frozen when the
    stage is trained on its own); steps_key: the method option holding this stage's optimizer
    steps when every stage runs from one command (None: train.max_steps).
    """

    name: str
    trains: tuple[str, ...] | None = None
    steps_key: str | None = None


class Method(nn.Module):
    """Base class. Subclasses set `name`, `Options` and implement the three methods below."""

    name: str = "base"
    Options: type = NoOptions
    # the typed `sample:` section (samplers/<family>.py Options): the sampler family's knobs only
    SampleOptions: type = StepOptions
    # True when `nelbo` is an exact NLL rather than a Monte-Carlo bound (one pass suffices)
    exact_likelihood: bool = False
    # False for methods without a likelihood bound (EDM on continuous data): validation and
    # evaluation then report `validation_loss` instead of bits
    has_likelihood: bool = True

    def __init__(self, options, model_cfg, vocab_size: int, seq_len: int):
        super().__init__()
        self.options = options
        self.model_cfg = model_cfg
        self.vocab_size = vocab_size  # K
        self.seq_len = seq_len  # L

    def forward(self, batch: Batch | torch.Tensor, generator: torch.Generator | None = None) -> LossOutput:
        """Training loss on a clean batch (a Batch, or a (B, L) tensor whose every position is a
        target): the method's terms reduced in one place (losses.reduce); randomness only from
        `generator`."""
        terms, nll = self.loss_terms(Batch.of(batch), generator)
        loss, metrics = losses.reduce(terms)
        return LossOutput(loss=loss, nll=nll, metrics=metrics)

    def loss_terms(self, batch: Batch, generator: torch.Generator | None) -> tuple[dict, torch.Tensor | None]:
        """({name: losses.Term}, (B,) detached per-sequence bound in nats or None)."""
        raise NotImplementedError

    def nelbo(self, batch: Batch | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) float64 upper bound on -log p(target | rest) in nats (one Monte-Carlo draw for diffusion)."""
        raise NotImplementedError

    def validation_loss(self, batch: Batch | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) held-out loss of methods without a likelihood (has_likelihood = False)."""
        raise NotImplementedError

    def sample(self, n: int, cfg, generator: torch.Generator | None = None,
               condition: Condition | None = None) -> SampleOutput:
        """n samples (n, L) under `cfg` (an instance of `SampleOptions`; `cfg.steps` is the
        network-call budget where the family has one); SampleOutput.nfe = the calls made. With a
        condition, the samples equal condition.values wherever condition.fixed (conditioning.py)."""
        raise NotImplementedError

    @classmethod
    def sample_options(cls, **overrides):
        """This method's sampler options with `overrides` (checked: unknown names and bad values fail)."""
        return cls.SampleOptions(**overrides)

    def _condition(self, condition: Condition | None, n: int) -> Condition | None:
        """The condition padded to this model's length (Condition.fit: a shorter template gets free
        positions on the right), checked against the model and expanded to n rows on its device."""
        if condition is None:
            return None
        condition = condition.fit(self.seq_len)
        condition.check(self.seq_len, self.vocab_size or None)
        return condition.for_batch(n, self.device)

    @classmethod
    def stages(cls, options) -> tuple[Stage, ...]:
        """The training stages, in order. `method.stage` = 0 runs them all in sequence from one
        command (trainer.py: each stage initialised from the previous one); k trains stage k alone
        (initialise it with train.init_from). One stage by default."""
        return (Stage("all"),)

    def freeze_for_stage(self) -> None:
        """Freeze every submodule the selected stage (`options.stage` >= 1) does not train."""
        k = getattr(self.options, "stage", 0)
        stages = self.stages(self.options)
        if k > len(stages):
            raise ConfigError(f"method.stage={k}, but {self.name} declares {len(stages)} stage(s) "
                              f"({', '.join(s.name for s in stages)})")
        trains = stages[k - 1].trains if k else None
        if trains is not None:
            for name, child in self.named_children():
                child.requires_grad_(name in trains)
            for name, p in self.named_parameters(recurse=False):
                p.requires_grad_(name in trains)

    uses_probe = False  # True: the trainer passes a fixed held-out structs.Probe to diagnostics

    def diagnostics(self, probe=None) -> dict:
        """Cheap scalars logged with every training record (e.g. embedding spread); none by default."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name, "options": asdict(self.options)}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
