"""What one training step minimises: the emotion loss, plus the AU term and the uncertain-label methods.

An :class:`Objective` maps a model and a batch to a :class:`StepLoss`; the trainer's loops call it inside
autocast and know nothing of the tasks. The plain objective is ``loss_fn(model(videos), labels)``, exactly
the loop of before; the others call ``model(videos, outputs=True)`` (a
:class:`~microexp.models.multitask.MultiTaskVideoModel`, through DDP's ``forward``) and read its heads.

Every statistic an objective holds (AU vocabulary, positive weights) comes from the fold's training clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from microexp.data.aus import AUVocabulary

__all__ = ["Objective", "StepLoss"]


@dataclass(frozen=True)
class StepLoss:
    """One step's loss (fp32 scalar), the batch size and the number of correct training predictions.

    ``correct`` counts the clips whose emotion is predicted right; for an AU-only model, the clips' fraction
    of AU decisions right, summed (so ``correct / samples`` is the AU accuracy).
    """

    loss: torch.Tensor
    samples: int
    correct: torch.Tensor


class Objective:
    """The training loss of a step: ``loss_fn`` on the emotion logits, plus ``au_weight`` x BCE on the AUs.

    Args:
        loss_fn: the emotion loss ``(logits (B, C), labels (B,)) -> scalar`` (None for an AU-only model).
        au_vocabulary: the fold's AU vocabulary (None: no AU term); AU targets are encoded from the batch's
            ``aus`` strings with it.
        au_pos_weight: BCE positive weights ``(A,)`` from the training clips (None: 1).
        au_weight: weight of the AU term.
    """

    def __init__(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, *,
                 au_vocabulary: AUVocabulary | None = None, au_pos_weight: torch.Tensor | None = None,
                 au_weight: float = 1.0) -> None:
        if loss_fn is None and au_vocabulary is None:
            raise ValueError("an objective needs an emotion loss or an AU vocabulary")
        self.loss_fn = loss_fn
        self.au_vocabulary = au_vocabulary
        self.au_pos_weight = au_pos_weight
        self.au_weight = float(au_weight)

    @property
    def needs_outputs(self) -> bool:
        """Whether the model must return :class:`~microexp.models.multitask.TaskOutputs`."""
        return self.au_vocabulary is not None

    def to(self, device: torch.device) -> "Objective":
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn = self.loss_fn.to(device)
        if self.au_pos_weight is not None:
            self.au_pos_weight = self.au_pos_weight.to(device)
        return self

    def set_epoch(self, epoch: int) -> None:
        if self.loss_fn is not None and hasattr(self.loss_fn, "set_epoch"):
            self.loss_fn.set_epoch(epoch)

    def au_targets(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        """``(B, A)`` float multi-hot AU targets of the batch."""
        assert self.au_vocabulary is not None
        return torch.from_numpy(self.au_vocabulary.encode(batch["aus"])).to(device, non_blocking=True)

    def __call__(self, model: nn.Module, videos: torch.Tensor, batch: dict[str, Any],
                 labels: torch.Tensor) -> StepLoss:
        """The step's loss on ``videos`` (already on the device, in the model's memory format)."""
        if not self.needs_outputs:
            logits = model(videos)
            assert self.loss_fn is not None
            loss = self.loss_fn(logits.float(), labels)
            return StepLoss(loss, labels.shape[0], (logits.detach().argmax(dim=1) == labels).sum())
        out = model(videos, outputs=True)
        terms = []
        correct: torch.Tensor
        if self.loss_fn is not None and out.logits is not None:
            terms.append(self.loss_fn(out.logits.float(), labels))
            correct = (out.logits.detach().argmax(dim=1) == labels).sum()
        targets = self.au_targets(batch, videos.device)
        au_logits = out.au_logits.float()
        au_loss = F.binary_cross_entropy_with_logits(au_logits, targets, pos_weight=self.au_pos_weight)
        terms.append(self.au_weight * au_loss if self.loss_fn is not None else au_loss)
        if self.loss_fn is None or out.logits is None:
            correct = ((au_logits.detach() > 0) == (targets > 0.5)).float().mean(dim=1).sum()
        return StepLoss(sum(terms[1:], terms[0]), labels.shape[0], correct)
