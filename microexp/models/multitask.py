"""Task heads beside a backbone's emotion classifier: action-unit (AU) detection, an AU-relation graph, and a
per-clip confidence head.

:class:`MultiTaskVideoModel` wraps any registered model (``create_model(name, aus=[...], au_head=...)``
builds it, so a checkpoint rebuilds it from its arguments alone). ``model(x)`` still returns the emotion
logits ``(B, num_classes)`` (the AU logits for an AU-only model, ``num_classes=0``), so prediction,
export and benchmarks work unchanged; ``model(x, outputs=True)`` returns :class:`TaskOutputs` with every
head's output, which the trainer's objectives read (through DDP, which only wraps ``forward``).

AU heads (``au_head``):

* ``linear``: one linear layer on the backbone's pooled feature, ``(B, D) -> (B, A)``.
* ``graph``: a two-layer graph convolution over AU nodes (in the spirit of ML-GCN, Chen et al. 2019, and
  the AU-relation graphs of MER-GCN, Lo et al. 2020, and the multi-task GCN of micro-expression work):
  learnt node embeddings ``E (A, d)`` propagate over the normalised co-occurrence adjacency ``Â``,
  ``W = Â·LeakyReLU(Â·E·W1)·W2`` gives one classifier per AU ``(A, D)``, and AU logits are ``f·Wᵀ + b``.
  The AU predictions are coupled back to the emotion: ``g = σ(AU logits)·W / A`` (an AU-aware feature) adds
  ``Linear(g)`` (zero-initialised) to the backbone's emotion logits. The adjacency is a buffer set by
  :meth:`MultiTaskVideoModel.set_au_cooccurrence` from the fold's *training* clips (identity until then).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._base import VideoClassifier
from .layers import ClassifierHead

__all__ = ["AU_HEADS", "AUGraphHead", "LinearAUHead", "MultiTaskVideoModel", "TaskOutputs", "graph_adjacency",
           "pooled_classifier"]

#: ``au_head`` values
AU_HEADS = ("linear", "graph")
#: ML-GCN's binarisation threshold of the conditional probabilities and its re-weighting of neighbours
GRAPH_THRESHOLD, GRAPH_REWEIGHT = 0.4, 0.2


class TaskOutputs(NamedTuple):
    """Every head's output for a batch of ``B`` clips.

    ``logits (B, C)`` emotion (None for an AU-only model); ``au_logits (B, A)`` (None without AUs);
    ``features (B, D)`` the pooled backbone feature (after the head's dropout in training);
    ``feature_maps`` the backbone's unpooled output (family layout, e.g. ``(B, D, T, h, w)``);
    ``confidence (B,)`` in (0, 1) when the model has a confidence head, else None.
    """

    logits: torch.Tensor | None
    au_logits: torch.Tensor | None
    features: torch.Tensor
    feature_maps: Any
    confidence: torch.Tensor | None


def graph_adjacency(conditional: torch.Tensor, *, threshold: float = GRAPH_THRESHOLD,
                    reweight: float = GRAPH_REWEIGHT) -> torch.Tensor:
    """The propagation matrix of the AU graph from conditional co-occurrence ``P (A, A)`` (``P[i, j] = P(j | i)``),
    with ML-GCN's binarisation and re-weighting.

    Off-diagonal entries ``P >= threshold`` become edges (rarer co-occurrences are noise on a small
    dataset); each node keeps ``1 - reweight`` of its own feature and spreads ``reweight`` evenly over its
    neighbours (a node without neighbours keeps all of it). Every row sums to 1, so no further normalisation
    is needed (ML-GCN's code also propagates over the transpose; here node ``i`` gathers from the AUs that
    co-occur with it given ``i``).

    Returns:
        ``(A, A)`` float32, rows summing to 1.
    """
    p = torch.as_tensor(conditional, dtype=torch.float32)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"conditional: expected a square (A, A) matrix, got shape {tuple(p.shape)}")
    size = p.shape[0]
    eye = torch.eye(size, dtype=torch.float32)
    edges = ((p >= threshold) & (eye == 0)).float()
    degree = edges.sum(dim=1, keepdim=True)
    has = degree > 0
    return torch.where(has, edges * reweight / degree.clamp(min=1), edges) + eye * torch.where(
        has, torch.full_like(degree, 1 - reweight), torch.ones_like(degree))


def pooled_classifier(model: nn.Module) -> nn.Linear | None:
    """The emotion classifier of a model whose head average-pools a tensor feature map, else None.

    Class activation maps (EAC) and feature mixing need it: ``logits = fc(mean over positions of the map)``,
    so ``fc.weight`` applied at each position is the map's class activation. Families whose head is a token,
    a fusion of two streams or a flatten have none.
    """
    backbone = model.backbone if isinstance(model, MultiTaskVideoModel) else model
    head = getattr(backbone, "head", None)
    if isinstance(head, ClassifierHead) and head.pool == "avg" and isinstance(head.fc, nn.Linear):
        return head.fc
    return None


class LinearAUHead(nn.Module):
    """``(B, D)`` pooled features -> ``(B, A)`` AU logits."""

    def __init__(self, *, in_features: int, num_aus: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_aus)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(AU logits (B, A), None)`` (no emotion coupling)."""
        return self.fc(features), None


class AUGraphHead(nn.Module):
    """Graph convolution over AU nodes, coupled to the emotion logits (see the module docstring).

    Args:
        in_features: the pooled feature size ``D``.
        num_aus: AU nodes ``A``.
        num_classes: emotion classes the AU-aware feature is mapped to (0: no coupling).
        node_dim, hidden: node-embedding and hidden sizes of the two graph convolutions.
    """

    def __init__(self, *, in_features: int, num_aus: int, num_classes: int, node_dim: int = 64,
                 hidden: int = 64) -> None:
        super().__init__()
        self.num_aus = num_aus
        self.register_buffer("adjacency", torch.eye(num_aus))
        self.nodes = nn.Parameter(torch.randn(num_aus, node_dim) * 0.1)
        self.gc1 = nn.Linear(node_dim, hidden, bias=False)
        self.gc2 = nn.Linear(hidden, in_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_aus))
        self.to_emotion: nn.Module | None = None
        if num_classes > 0:
            self.to_emotion = nn.Linear(in_features, num_classes)
            nn.init.zeros_(self.to_emotion.weight)  # starts as the backbone's own emotion head
            nn.init.zeros_(self.to_emotion.bias)

    def set_cooccurrence(self, conditional: torch.Tensor) -> None:
        """Set the adjacency from training-clip conditional co-occurrences ``(A, A)``."""
        adjacency = graph_adjacency(conditional)
        if adjacency.shape != self.adjacency.shape:
            raise ValueError(f"co-occurrence of shape {tuple(adjacency.shape)} for {self.num_aus} AU nodes")
        self.adjacency.copy_(adjacency.to(self.adjacency.device))

    def au_classifiers(self) -> torch.Tensor:
        """``(A, D)``: one classifier per AU, from the graph."""
        hidden = F.leaky_relu(self.adjacency @ self.gc1(self.nodes), 0.2)
        return self.adjacency @ self.gc2(hidden)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(AU logits (B, A), emotion-logit term (B, C) or None)``."""
        weights = self.au_classifiers().to(features.dtype)
        au_logits = features @ weights.t() + self.bias.to(features.dtype)
        if self.to_emotion is None:
            return au_logits, None
        aware = torch.sigmoid(au_logits) @ weights / self.num_aus
        return au_logits, self.to_emotion(aware)


class MultiTaskVideoModel(VideoClassifier):
    """A registered backbone with an AU head and/or a confidence head beside its emotion classifier.

    Args:
        backbone: a registered model (its emotion classifier is kept; ``num_classes=0`` for AU only).
        aus: the AU codes of the head's outputs, in order (``['1', '2', '12']``); empty: no AU head.
        au_head: ``linear`` or ``graph`` (see the module docstring).
        confidence_head: add ``sigmoid(Linear(feature))``, a learnt per-clip confidence (training only).
    """

    def __init__(self, backbone: VideoClassifier, *, aus: list[str], au_head: str = "linear",
                 confidence_head: bool = False) -> None:
        super().__init__()
        if au_head not in AU_HEADS:
            raise ValueError(f"au_head={au_head!r}: expected one of {', '.join(AU_HEADS)}")
        if backbone.num_classes == 0 and not aus:
            raise ValueError("a model without an emotion classifier (num_classes=0) needs AUs to detect (aus=[...])")
        self.backbone = backbone
        self.num_classes = backbone.num_classes
        self.num_features = backbone.num_features
        self.fixed_frames = backbone.fixed_frames
        self.fixed_size = backbone.fixed_size
        self.au_codes = tuple(str(a) for a in aus)
        self.au_head_kind = au_head
        self.au_head: nn.Module | None = None
        if aus:
            self.au_head = (AUGraphHead(in_features=self.num_features, num_aus=len(aus), num_classes=self.num_classes)
                            if au_head == "graph" else LinearAUHead(in_features=self.num_features, num_aus=len(aus)))
        self.confidence: nn.Module | None = nn.Linear(self.num_features, 1) if confidence_head else None
        self.spec = dataclasses.replace(backbone.spec, kwargs={
            **backbone.spec.kwargs, "aus": list(self.au_codes), "au_head": au_head, "confidence_head": confidence_head})

    def set_au_cooccurrence(self, conditional: torch.Tensor) -> None:
        """Give the graph head its adjacency (training clips' ``P(j | i)``); a no-op for the linear head."""
        if isinstance(self.au_head, AUGraphHead):
            self.au_head.set_cooccurrence(conditional)

    def check_input(self, x: torch.Tensor) -> None:
        self.backbone.check_input(x)

    def forward_features(self, x: torch.Tensor) -> Any:
        return self.backbone.forward_features(x)

    def heads(self, feature_maps: Any) -> TaskOutputs:
        """Every head on ``forward_features`` output."""
        features = self.backbone.forward_head(feature_maps, pre_logits=True)
        logits = self.backbone.forward_head(feature_maps) if self.num_classes else None
        au_logits = None
        if self.au_head is not None:
            au_logits, emotion_term = self.au_head(features)
            if emotion_term is not None and logits is not None:
                logits = logits + emotion_term
        confidence = torch.sigmoid(self.confidence(features)).squeeze(1) if self.confidence is not None else None
        return TaskOutputs(logits=logits, au_logits=au_logits, features=features, feature_maps=feature_maps,
                           confidence=confidence)

    def forward_head(self, x: Any, *, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.backbone.forward_head(x, pre_logits=True)
        out = self.heads(x)
        return out.logits if out.logits is not None else out.au_logits

    def forward(self, x: torch.Tensor, *, outputs: bool = False) -> Any:  # type: ignore[override]
        """``(B, C, T, H, W)`` -> emotion logits ``(B, num_classes)`` (AU logits for an AU-only model), or
        :class:`TaskOutputs` with ``outputs=True``."""
        out = self.heads(self.backbone.forward_features(x))
        if outputs:
            return out
        return out.logits if out.logits is not None else out.au_logits

    def _reset_head(self, num_classes: int) -> None:
        self.backbone.reset_classifier(num_classes)

    def classifier_prefixes(self) -> tuple[str, ...]:
        return tuple(f"backbone.{p}" for p in self.backbone.classifier_prefixes())
