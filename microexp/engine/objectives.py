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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from microexp.config import NoisyLabelsConfig
from microexp.data.aus import AUVocabulary
from microexp.losses import distillation_loss
from microexp.label_noise import (
    class_activation_maps, confidence_weighted_loss, eac_consistency_loss, mixed_loss, random_erase_clips,
    uncertainty_feature_mix,
)
from microexp.models.multitask import pooled_classifier

__all__ = ["Objective", "StepLoss", "flip_model_input", "needs_task_outputs"]


@dataclass(frozen=True)
class StepLoss:
    """One step's loss (fp32 scalar), the batch size and the number of correct training predictions.

    ``correct`` counts the clips whose emotion is predicted right; for an AU-only model, the clips' fraction
    of AU decisions right, summed (so ``correct / samples`` is the AU accuracy).
    """

    loss: torch.Tensor
    samples: int
    correct: torch.Tensor


def needs_task_outputs(methods: NoisyLabelsConfig) -> bool:
    """Whether the step methods of ``methods`` read the model's other heads (EAC, confidence, mixing; re-labelling
    runs between epochs and needs none)."""
    return methods.eac_weight > 0 or methods.confidence or methods.mix_fraction > 0


class Objective:
    """The training loss of a step: ``loss_fn`` on the emotion logits, plus ``au_weight`` x BCE on the AUs,
    plus the uncertain-label methods.

    Args:
        loss_fn: the emotion loss ``(logits (B, C), labels (B,)) -> scalar`` (None for an AU-only model).
        au_vocabulary: the fold's AU vocabulary (None: no AU term); AU targets are encoded from the batch's
            ``aus`` strings with it.
        au_pos_weight: BCE positive weights ``(A,)`` from the training clips (None: 1).
        au_weight: weight of the AU term.
        methods: the uncertain-label methods (the recipe's ``noisy_labels`` section; ``eac_weight`` > 0 needs
            ``flip`` and an average-pooled classifier, ``confidence`` the model's confidence head).
        flip: the horizontal flip of a batch of model inputs (EAC's second view).
        relabelled: clip id -> the label re-labelling gave it (read at every step; the engine adds to it).
        soft_targets: clip id -> the teachers' soft labels ``(C,)`` (knowledge distillation; every training
            clip has one): the emotion term becomes ``(1 - distill_weight) x loss_fn + distill_weight x
            distillation_loss(logits, soft labels, distill_temperature)``.

    Methods in a step (``B`` clips):

    * EAC (Zhang et al. 2022): the batch is randomly erased (one box per clip, fixed over its frames) and
      the model sees ``[erased, flip(erased)]`` in one forward; the emotion and AU terms use the first half,
      and ``eac_weight * MSE(CAM(erased), flip(CAM(flip(erased))))`` is added (CAMs with the classifier
      weight detached, as the reference code).
    * confidence (SCN): ``loss_fn(alpha * logits, labels) + L_RR`` with ``alpha`` the model's confidence.
    * mixing: the pooled features of the ``mix_fraction`` most uncertain clips (``1 - alpha`` with the
      confidence head, else the softmax entropy) are mixed with a random partner's and classified by the
      model's own linear classifier; the emotion term becomes ``lam CE(y_i) + (1 - lam) CE(y_j)`` with the
      emotion loss's class weights and label smoothing (a cross-entropy loss: ``ce``, ``weighted_ce``,
      ``cb_ce``; the configuration refuses the others).
    """

    def __init__(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, *,
                 au_vocabulary: AUVocabulary | None = None, au_pos_weight: torch.Tensor | None = None,
                 au_weight: float = 1.0, methods: NoisyLabelsConfig | None = None,
                 flip: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 relabelled: dict[str, int] | None = None, soft_targets: dict[str, np.ndarray] | None = None,
                 distill_weight: float = 0.5, distill_temperature: float = 4.0) -> None:
        if loss_fn is None and au_vocabulary is None:
            raise ValueError("an objective needs an emotion loss or an AU vocabulary")
        self.loss_fn = loss_fn
        self.au_vocabulary = au_vocabulary
        self.au_pos_weight = au_pos_weight
        self.au_weight = float(au_weight)
        self.methods = methods or NoisyLabelsConfig()
        if self.methods.eac_weight > 0 and flip is None:
            raise ValueError("EAC needs the flip of the model's input")
        self.flip = flip
        self.relabelled = relabelled if relabelled is not None else {}
        self.soft_targets = soft_targets
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature)
        self.generator = torch.Generator().manual_seed(0)  # erasing boxes and mixing draws; reseeded per epoch

    @property
    def needs_outputs(self) -> bool:
        """Whether the model must return :class:`~microexp.models.multitask.TaskOutputs`."""
        return self.au_vocabulary is not None or needs_task_outputs(self.methods)

    def to(self, device: torch.device) -> "Objective":
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn = self.loss_fn.to(device)
        if self.au_pos_weight is not None:
            self.au_pos_weight = self.au_pos_weight.to(device)
        return self

    def set_epoch(self, epoch: int) -> None:
        if self.loss_fn is not None and hasattr(self.loss_fn, "set_epoch"):
            self.loss_fn.set_epoch(epoch)

    def reseed(self, seed: int) -> None:
        """Seed the objective's own draws (erasing, mixing) for an epoch: a resumed fold draws the same."""
        self.generator.manual_seed(int(seed))

    def au_targets(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        """``(B, A)`` float multi-hot AU targets of the batch."""
        assert self.au_vocabulary is not None
        return torch.from_numpy(self.au_vocabulary.encode(batch["aus"])).to(device, non_blocking=True)

    def labels(self, batch: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
        """The batch's labels with re-labelled clips' new labels (training only; the batch is not changed)."""
        if not self.relabelled:
            return labels
        changed = [(i, self.relabelled[str(c)]) for i, c in enumerate(batch["clip"]) if str(c) in self.relabelled]
        if not changed:
            return labels
        rows, values = zip(*changed)
        out = labels.clone()
        out[torch.tensor(rows, device=labels.device)] = torch.tensor(values, dtype=labels.dtype, device=labels.device)
        return out

    def __call__(self, model: nn.Module, videos: torch.Tensor, batch: dict[str, Any],
                 labels: torch.Tensor) -> StepLoss:
        """The step's loss on ``videos`` (already on the device, in the model's memory format)."""
        labels = self.labels(batch, labels)
        if not self.needs_outputs:
            logits = model(videos)
            assert self.loss_fn is not None
            loss = self._distilled(self.loss_fn(logits.float(), labels), logits, batch)
            return StepLoss(loss, labels.shape[0], (logits.detach().argmax(dim=1) == labels).sum())
        m = self.methods
        consistency = None
        if m.eac_weight > 0:
            assert self.flip is not None
            erased = random_erase_clips(videos, generator=self.generator)
            both = model(torch.cat([erased, self.flip(erased)]), outputs=True)
            out, flipped = _halves(both, videos.shape[0])
            weight = pooled_classifier(_unwrap(model)).weight.detach()
            consistency = eac_consistency_loss(class_activation_maps(out.feature_maps.float(), weight.float()),
                                               class_activation_maps(flipped.feature_maps.float(), weight.float()))
        else:
            out = model(videos, outputs=True)
        terms = []
        correct = torch.zeros((), device=videos.device)
        if self.loss_fn is not None and out.logits is not None:
            terms.append(self._distilled(self._emotion_loss(model, out, labels), out.logits, batch))
            correct = (out.logits.detach().argmax(dim=1) == labels).sum()
        if self.au_vocabulary is not None:
            targets = self.au_targets(batch, videos.device)
            au_logits = out.au_logits.float()
            au_loss = F.binary_cross_entropy_with_logits(au_logits, targets, pos_weight=self.au_pos_weight)
            terms.append(self.au_weight * au_loss if self.loss_fn is not None else au_loss)
            if self.loss_fn is None or out.logits is None:
                correct = ((au_logits.detach() > 0) == (targets > 0.5)).float().mean(dim=1).sum()
        if consistency is not None:
            terms.append(m.eac_weight * consistency)
        return StepLoss(sum(terms[1:], terms[0]), labels.shape[0], correct)

    def _distilled(self, loss: torch.Tensor, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The emotion term mixed with the distillation term (unchanged without soft labels)."""
        if self.soft_targets is None:
            return loss
        missing = [str(c) for c in batch["clip"] if str(c) not in self.soft_targets]
        if missing:  # the teachers labelled exactly the fold's training clips
            raise RuntimeError(f"no soft label for training clip(s) {missing[:3]}")
        targets = torch.from_numpy(np.stack([self.soft_targets[str(c)] for c in batch["clip"]])).to(logits.device)
        soft = distillation_loss(logits.float(), targets, temperature=self.distill_temperature)
        return (1.0 - self.distill_weight) * loss + self.distill_weight * soft

    def _emotion_loss(self, model: nn.Module, out: Any, labels: torch.Tensor) -> torch.Tensor:
        m = self.methods
        assert self.loss_fn is not None
        logits = out.logits.float()
        if m.confidence:  # SCN: logit-weighted loss and rank regularisation of the confidences
            weighted, regularisation = confidence_weighted_loss(
                logits, labels, out.confidence.float(), loss_fn=self.loss_fn, beta=m.confidence_beta,
                margin=m.confidence_margin)
        if m.mix_fraction <= 0:
            return weighted + regularisation if m.confidence else self.loss_fn(logits, labels)
        if out.confidence is not None:
            uncertainty = 1.0 - out.confidence.detach()
        else:
            probabilities = torch.softmax(logits.detach(), dim=1)
            uncertainty = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)
        mixed = uncertainty_feature_mix(out.features, labels, uncertainty, fraction=m.mix_fraction,
                                        alpha=m.mix_alpha, generator=self.generator)
        mixed_logits = pooled_classifier(_unwrap(model))(mixed.features).float()
        if m.confidence:  # the confidence weights the mixed clips' logits too
            mixed_logits = out.confidence[:, None].float() * mixed_logits
        # the emotion loss's own cross-entropy (class weights, label smoothing) per clip, then its weighted mean:
        # lam w_a l_a + (1 - lam) w_b l_b over the batch's lam w_a + (1 - lam) w_b (PyTorch's weighted mean at lam 1)
        weight = getattr(self.loss_fn, "weight", None)
        smoothing = float(getattr(self.loss_fn, "label_smoothing", 0.0))
        loss = mixed_loss(mixed_logits, mixed, lambda z, y: F.cross_entropy(z, y, weight=weight, reduction="none",
                                                                            label_smoothing=smoothing))
        if weight is not None:
            lam = mixed.lam.float()
            loss = loss / (lam * weight[mixed.targets_a] + (1 - lam) * weight[mixed.targets_b]).mean()
        return loss + regularisation if m.confidence else loss


def flip_model_input(*, modality: str, flow_channels: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The horizontal flip of a batch of model inputs ``(B, C, T, H, W)``, as the training flip makes it:
    RGB mirrored; flow mirrored with its horizontal displacement (the first flow channel) negated.

    Raises:
        ValueError: a modality without a flip here (``apex_flow``: encoded flows).
    """
    if modality == "rgb":
        return lambda x: x.flip(-1)
    if modality in ("flow", "rgb+flow"):
        dx = 0 if modality == "flow" else 3

        def flip(x: torch.Tensor) -> torch.Tensor:
            out = x.flip(-1)
            sign = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
            sign[dx] = -1
            return out * sign.view(1, -1, 1, 1, 1)

        return flip
    raise ValueError(f"modality {modality!r}: no input flip (EAC needs rgb, flow or rgb+flow)")


def _halves(out: Any, size: int) -> tuple[Any, Any]:
    """Split :class:`TaskOutputs` of a doubled batch into its two halves."""
    def part(value: Any, index: slice) -> Any:
        return value[index] if isinstance(value, torch.Tensor) else None

    first, second = slice(0, size), slice(size, None)
    return (type(out)(*(part(v, first) for v in out)), type(out)(*(part(v, second) for v in out)))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
