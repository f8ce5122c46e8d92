"""Apex-flow family: models that classify ONE onset->apex optical flow, as most published MER methods do.

Input ``(B, 3, 1, H, W)`` float (modality ``apex_flow``): channels u (horizontal displacement), v (vertical)
and optical strain of the flow from the onset to the apex frame; ``T = 1`` always (``num_frames`` other than
1 is refused when the model is built, any other ``T`` when it runs). How the values are encoded (min-max
scaled to [0, 1] per channel by default, raw 0-255 B, G, R = strain, v, u for the STSTNet authors' weights)
is decided by the data pipeline (:mod:`microexp.data.apex_flow`), not here; ``spec.mean``/``spec.std``
(0 and 1) are not applied to flow.

- ``ststnet``: STSTNet (Liong et al., "Shallow Triple Stream Three-dimensional CNN (STSTNet) for
  micro-expression recognition", FG 2019), exactly the authors' public PyTorch definition and parameter
  names, so their per-subject weights load with ``model.pretrained``, classifier included (see
  :class:`STSTNet`). 1,683 parameters for 3 classes.
- ``off_apexnet``: Off-ApexNet (Gan, Liong, Yau, Huang & Tan, Signal Processing: Image Communication
  2019): one small CNN stream for u and one for v, fused by two fully connected layers.
- ``htnet``: a small hierarchical transformer after HTNet (Wang et al., Neurocomputing 2024): four facial
  regions (eyes, lip corners) cut around fixed or per-sample centres, local self-attention within each
  region, then regions merged pairwise (eyes, lips) and as a whole face, with attention at every level.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import ModelSpec, VideoClassifier, channel_stats
from ._registry import register_model
from .layers import ClassifierHead

__all__ = [
    "APEX_FLOW_CHANNELS",
    "HTNET_REGIONS",
    "DEFAULT_REGION_CENTRES",
    "STSTNet",
    "OffApexNet",
    "HTNet",
    "RegionAggregate",
    "check_region_centres",
    "region_grid",
    "ststnet_feature_side",
    "ststnet",
    "off_apexnet",
    "htnet",
]

#: u, v, strain
APEX_FLOW_CHANNELS = 3
#: the smallest input side the family accepts (every model still has a spatial map after its pooling)
MIN_INPUT_SIZE = 8
#: HTNet's four regions, in the order of ``region_centres`` and of the per-sample centres
HTNET_REGIONS = ("left_eye", "right_eye", "left_lip_corner", "right_lip_corner")
#: default region centres ``(x, y)`` as fractions of the face's width and height ("left" = image left).
#: Eyes at (0.29, 0.36) / (0.71, 0.36), lip corners at (0.36, 0.75) / (0.64, 0.75) of an aligned face; chosen
#: on the 28-pixel grid so that with the default ``region_fraction=0.5`` and ``region_size=14`` a 28x28 flow's
#: regions are exact 14x14 pixel windows (rows 3-16 for the eyes, 14-27 for the lips), no interpolation.
DEFAULT_REGION_CENTRES = ((8 / 28, 10 / 28), (20 / 28, 10 / 28), (10 / 28, 21 / 28), (18 / 28, 21 / 28))
#: HTNet's aggregation levels: regions merged in pairs (eyes, lips), then the whole face
_PAIRS = 2


def _check_apex_flow_shape(name: str, *, num_frames: int, input_size: int) -> None:
    """The family's shared constructor checks (ValueError naming the argument)."""
    if isinstance(num_frames, bool) or num_frames != 1:
        raise ValueError(
            f"{name}: num_frames: expected 1 (an apex_flow model reads one onset->apex flow, input "
            f"(B, 3, 1, H, W)), got {num_frames!r}"
        )
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < MIN_INPUT_SIZE:
        raise ValueError(f"{name}: input_size: expected an int >= {MIN_INPUT_SIZE}, got {input_size!r}")


def _apex_flow_spec(*, num_frames: int, input_size: int) -> ModelSpec:
    in_channels, mean, std = channel_stats("apex_flow", flow_channels=APEX_FLOW_CHANNELS, mean=(), std=())
    return ModelSpec(
        family="apex_flow", modality="apex_flow", num_frames=num_frames, input_size=input_size,
        in_channels=in_channels, mean=mean, std=std, flow_channels=APEX_FLOW_CHANNELS,
    )


class _ApexFlowModel(VideoClassifier):
    """What the family shares: ``T == 1`` checked at run time; the flow image ``(B, 3, H, W)``."""

    fixed_frames = True

    def flow_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1, H, W)`` -> ``(B, 3, H, W)`` after :meth:`check_input`."""
        self.check_input(x)
        return x[:, :, 0]


# -- STSTNet -------------------------------------------------------------------------------------------------


def ststnet_feature_side(input_size: int) -> int:
    """Side of STSTNet's last feature map (before ``fc``) for an ``input_size`` input: 5 for 28.

    conv 3x3 with padding 2 -> ``H + 2``; max-pool 3, stride 3, padding 1 -> ``(H + 1) // 3 + 1``;
    average-pool 2, stride 2 -> half of that, rounded down.
    """
    return ((input_size + 1) // 3 + 1) // 2


class STSTNet(_ApexFlowModel):
    """STSTNet (Liong et al., FG 2019) as in the authors' public PyTorch code.

    Three shallow streams read the same 3-channel flow: ``convK`` (3x3, padding 2; 3, 5 and 8 filters)
    -> ReLU -> ``bnK`` (ReLU before BatchNorm, as their code has it) -> max-pool 3 (stride 3, padding 1) ->
    dropout 0.5. The 16 maps are concatenated, average-pooled 2x2 and flattened into ``fc``. At 28x28 the last
    map is 5x5 (``fc`` reads 5*5*16 = 400 values); at another ``input_size`` ``fc`` reads
    ``16 * ststnet_feature_side(input_size) ** 2`` values, and the model then only accepts that size.

    The parameters are named as in the authors' code, at the top level of the state dict (``conv1..3``,
    ``bn1..3``, ``fc``), so their per-subject ``.pth`` files load with ``model.pretrained`` without missing or
    unexpected keys. ``fc`` is their 3-class classifier, so unlike every other model the classifier is not
    replaced when weights are loaded (:meth:`classifier_prefixes` is empty): it loads like any layer when its
    shape matches (``num_classes=3``, ``input_size=28``) and is otherwise reported as a shape mismatch and keeps
    its fresh initialisation. Initialisation is PyTorch's default, as in their code.

    Shapes: ``(B, 3, 1, H, W)`` -> features ``(B, 16, m, m)`` (``m = (H + 1) // 3 + 1``, 10 at 28) ->
    ``(B, num_classes)``; ``num_features = 16 * (m // 2) ** 2``.
    """

    fixed_size = True

    def __init__(self, *, num_classes: int, num_frames: int = 1, input_size: int = 28, drop_rate: float = 0.5) -> None:
        super().__init__()
        _check_apex_flow_shape("ststnet", num_frames=num_frames, input_size=input_size)
        self.conv1 = nn.Conv2d(APEX_FLOW_CHANNELS, 3, kernel_size=3, padding=2)
        self.conv2 = nn.Conv2d(APEX_FLOW_CHANNELS, 5, kernel_size=3, padding=2)
        self.conv3 = nn.Conv2d(APEX_FLOW_CHANNELS, 8, kernel_size=3, padding=2)
        self.relu = nn.ReLU()
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(5)
        self.bn3 = nn.BatchNorm2d(8)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=3, padding=1)
        self.avgpool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.dropout = nn.Dropout(p=drop_rate)
        self.num_features = 16 * ststnet_feature_side(input_size) ** 2
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Identity()
        self._reset_head(num_classes)
        self.spec = _apex_flow_spec(num_frames=num_frames, input_size=input_size)

    def _stream(self, x: torch.Tensor, conv: nn.Module, bn: nn.Module) -> torch.Tensor:
        return self.dropout(self.maxpool(bn(self.relu(conv(x)))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1, H, W)`` -> the three streams concatenated, ``(B, 16, m, m)``."""
        image = self.flow_image(x)
        return torch.cat([self._stream(image, self.conv1, self.bn1), self._stream(image, self.conv2, self.bn2),
                          self._stream(image, self.conv3, self.bn3)], dim=1)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Average-pool 2x2, flatten, ``fc``; ``pre_logits`` gives the flattened ``(B, num_features)``."""
        flat = self.avgpool(x).flatten(1)
        return flat if pre_logits else self.fc(flat)

    def _reset_head(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def classifier_prefixes(self) -> tuple[str, ...]:
        """None: the authors' weights include their classifier, which loads when its shape matches."""
        return ()


# -- Off-ApexNet ---------------------------------------------------------------------------------------------


def _off_apexnet_stream() -> nn.Sequential:
    """One flow component ``(B, 1, H, W)`` -> ``(B, 16, ceil(H / 4), ceil(W / 4))``."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),  # 'same' pooling: ceil(H / 2)
        nn.Conv2d(6, 16, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
    )


class OffApexNet(_ApexFlowModel):
    """Off-ApexNet (Gan et al., Signal Processing: Image Communication 2019).

    Two streams, ``u_stream`` on channel 0 (u) and ``v_stream`` on channel 1 (v); the strain channel is not
    used. Each: conv 5x5 (6 filters, 'same') -> ReLU -> max-pool 2 -> conv 5x5 (16 filters, 'same') -> ReLU ->
    max-pool 2, flattened; both concatenated (u first) -> FC 1024 -> ReLU -> dropout -> FC 1024 -> ReLU ->
    dropout -> ``head.fc``. Input 28x28 (16x7x7 per stream); at another ``input_size`` the first FC follows it
    (``ceil(H / 4)`` per side) and the model only accepts that size. The channel order is u, v, strain, i.e.
    the ``minmax`` and ``pixels`` encodings; under ``bgr255`` (strain, v, u) the streams would read strain and v.

    From the paper: the two streams, filter counts and sizes, pooling, the two 1024-unit layers and the
    28x28 input. Guessed: 'same' padding of the pooling (ceil), dropout 0.5 after each hidden FC layer, no
    batch norm, PyTorch's default initialisation (the authors used TensorFlow), the classifier's init
    (normal, std 0.01) and the flattening order (channel-major).

    Shapes: ``(B, 3, 1, H, W)`` -> features ``(B, 2 * 16 * s * s)`` (``s = ceil(H / 4)``) ->
    ``(B, num_classes)``; ``num_features = 1024`` (the second hidden layer).
    """

    fixed_size = True

    def __init__(
        self, *, num_classes: int, num_frames: int = 1, input_size: int = 28, hidden: int = 1024,
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        _check_apex_flow_shape("off_apexnet", num_frames=num_frames, input_size=input_size)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"off_apexnet: hidden: expected an int >= 1, got {hidden!r}")
        self.u_stream = _off_apexnet_stream()
        self.v_stream = _off_apexnet_stream()
        side = -(-input_size // 4)
        self.fusion = nn.Sequential(
            nn.Linear(2 * 16 * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
        )
        self.num_features = hidden
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=hidden, num_classes=num_classes)
        self.spec = _apex_flow_spec(num_frames=num_frames, input_size=input_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1, H, W)`` -> both streams flattened and concatenated, ``(B, 2 * 16 * s * s)``."""
        image = self.flow_image(x)
        u = self.u_stream(image[:, 0:1]).flatten(1)
        v = self.v_stream(image[:, 1:2]).flatten(1)
        return torch.cat([u, v], dim=1)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """The two hidden FC layers, then the classifier (``pre_logits``: the ``(B, hidden)`` features)."""
        return self.head(self.fusion(x), pre_logits=pre_logits)

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)


# -- HTNet ---------------------------------------------------------------------------------------------------


def check_region_centres(centres: object, *, where: str = "region_centres") -> tuple[tuple[float, float], ...]:
    """Four ``(x, y)`` fractions in ``[0, 1]`` as a tuple of float pairs (ValueError naming ``where``)."""
    expected = f"four [x, y] pairs of fractions in [0, 1] ({', '.join(HTNET_REGIONS)})"
    if not isinstance(centres, (list, tuple)) or len(centres) != len(HTNET_REGIONS):
        raise ValueError(f"{where}: expected {expected}, got {centres!r}")
    out = []
    for pair in centres:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in pair)):
            raise ValueError(f"{where}: expected {expected}, got {centres!r}")
        out.append((float(pair[0]), float(pair[1])))
    return tuple(out)


def region_grid(centres: torch.Tensor, *, region_fraction: float, region_size: int) -> torch.Tensor:
    """``grid_sample`` grid that cuts square regions around ``centres``.

    Args:
        centres: ``(B, R, 2)`` region centres ``(x, y)`` as fractions of the width and height.
        region_fraction: side of each region as a fraction of the face's side.
        region_size: samples per region side.

    Returns:
        ``(B * R, region_size, region_size, 2)`` normalised coordinates (``align_corners=False``: -1 and 1
        are the outer edges of the image, so a fraction ``f`` is ``2 f - 1``). Sample ``k`` of a region
        lies at ``centre + ((k + 0.5) / region_size - 0.5) * region_fraction``: on pixel centres when the
        region's edge falls on a pixel edge and ``region_size`` pixels span it (an exact crop).
    """
    b, r, _ = centres.shape
    steps = torch.arange(region_size, dtype=centres.dtype, device=centres.device)
    offsets = ((steps + 0.5) / region_size - 0.5) * region_fraction  # (S,)
    xs = centres[..., 0, None] + offsets  # (B, R, S)
    ys = centres[..., 1, None] + offsets
    grid = torch.stack(torch.broadcast_tensors(xs[:, :, None, :], ys[:, :, :, None]), dim=-1)  # (B, R, S, S, 2)
    return (2.0 * grid - 1.0).reshape(b * r, region_size, region_size, 2)


class RegionAggregate(nn.Module):
    """NesT-style aggregation of a region's token grid: conv 3x3 -> LayerNorm -> max-pool 3, stride 2.

    ``(N, D, g, g)`` -> ``(N, D, (g - 1) // 2 + 1, ...)``: 7 -> 4 -> 2.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.pool(x)


def _blocks(*, depth: int, dim: int, num_heads: int, mlp_ratio: float, drop_rate: float) -> nn.Sequential:
    """``depth`` pre-norm transformer blocks (GELU MLP) on ``(N, L, D)`` tokens."""
    return nn.Sequential(*[
        nn.TransformerEncoderLayer(d_model=dim, nhead=num_heads, dim_feedforward=int(dim * mlp_ratio),
                                   dropout=drop_rate, activation="gelu", batch_first=True, norm_first=True)
        for _ in range(depth)
    ])


class HTNet(_ApexFlowModel):
    """A small hierarchical transformer on the apex flow after HTNet (Wang et al., Neurocomputing 2024).

    1. Regions: around each centre of :data:`HTNET_REGIONS` (left eye, right eye, left lip corner, right lip
       corner) a square of ``region_fraction`` of the face's side is resampled (``grid_sample``, bilinear,
       border values beyond the image, so centres near an edge work) to ``region_size`` pixels. Centres:
       ``region_centres`` (fractions ``(x, y)`` of width and height, e.g. the mean landmarks of your aligned
       faces), else :data:`DEFAULT_REGION_CENTRES`; per sample, from landmarks, through ``forward(x,
       region_centres=...)`` (``(B, 4, 2)`` fractions), which overrides them for that call.
    2. Local attention: each region is cut into ``patch_size`` patches (``region_size / patch_size`` per
       side; 7x7 = 49 tokens by default), with a learnt position embedding per region and token, and
       ``region_depth`` transformer blocks attend within the region only.
    3. Hierarchical aggregation: every region's token grid is aggregated (conv 3x3, LayerNorm, max-pool
       stride 2: 7x7 -> 4x4), the two eye regions and the two lip regions are merged and ``pair_depth``
       blocks attend within each pair; aggregated again (4x4 -> 2x2), all four regions are merged and
       ``face_depth`` blocks attend over the face.
    4. Head: mean of the tokens -> LayerNorm -> dropout -> ``head.fc``.

    Any input size runs (the regions are resampled to ``region_size``). The authors' code crops 14x14
    patches around landmarks of a 28x28 flow and runs a wider and deeper NesT-style network; this one follows
    the same design but is sized for a CPU (dim 64, 2 + 2 + 2 blocks, 0.29 M parameters) and trains from
    scratch. Not a port: its weights do not load the authors'.

    Shapes: ``(B, 3, 1, H, W)`` -> tokens ``(B, 4 * g3 * g3, D)`` (16 by default) -> ``(B, num_classes)``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        num_frames: int = 1,
        input_size: int = 28,
        region_centres: Sequence[Sequence[float]] | None = None,
        region_fraction: float = 0.5,
        region_size: int = 14,
        patch_size: int = 2,
        dim: int = 64,
        region_depth: int = 2,
        pair_depth: int = 2,
        face_depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_apex_flow_shape("htnet", num_frames=num_frames, input_size=input_size)
        centres = check_region_centres(DEFAULT_REGION_CENTRES if region_centres is None else region_centres,
                                       where="htnet: region_centres")
        if isinstance(region_fraction, bool) or not isinstance(region_fraction, (int, float)) \
                or not 0.0 < region_fraction <= 1.0:
            raise ValueError(f"htnet: region_fraction: expected a number in (0, 1], got {region_fraction!r}")
        for key, value, least in (("region_size", region_size, 1), ("patch_size", patch_size, 1), ("dim", dim, 1),
                                  ("num_heads", num_heads, 1), ("region_depth", region_depth, 0),
                                  ("pair_depth", pair_depth, 0), ("face_depth", face_depth, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"htnet: {key}: expected an int >= {least}, got {value!r}")
        if region_size % patch_size:
            raise ValueError(f"htnet: region_size: {region_size} is not a multiple of patch_size={patch_size}")
        if dim % num_heads:
            raise ValueError(f"htnet: num_heads: {num_heads} does not divide dim={dim}")
        self.region_fraction = float(region_fraction)
        self.region_size = region_size
        self.grid_side = region_size // patch_size
        self.register_buffer("region_centres", torch.tensor(centres, dtype=torch.float32), persistent=False)
        num_regions = len(HTNET_REGIONS)
        self.patch_embed = nn.Conv2d(APEX_FLOW_CHANNELS, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(num_regions, self.grid_side ** 2, dim))
        block = dict(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_rate=drop_rate)
        self.region_blocks = _blocks(depth=region_depth, **block)
        self.pair_aggregate = RegionAggregate(dim=dim)
        self.pair_blocks = _blocks(depth=pair_depth, **block)
        self.face_aggregate = RegionAggregate(dim=dim)
        self.face_blocks = _blocks(depth=face_depth, **block)
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim
        self.num_classes = num_classes
        self.head = ClassifierHead(in_features=dim, num_classes=num_classes, drop_rate=drop_rate)
        nn.init.normal_(self.pos_embed, std=0.02)
        self.spec = _apex_flow_spec(num_frames=num_frames, input_size=input_size)

    def crop_regions(self, image: torch.Tensor, region_centres: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 3, H, W)`` flow -> ``(B, 4, 3, region_size, region_size)`` regions.

        Args:
            image: the flow image.
            region_centres: ``(B, 4, 2)`` per-sample centres ``(x, y)`` as fractions, or None for the model's.
        """
        b = image.shape[0]
        if region_centres is None:
            centres = self.region_centres.to(image.dtype).expand(b, -1, -1)
        else:
            expected = (b, len(HTNET_REGIONS), 2)
            if tuple(region_centres.shape) != expected:
                raise ValueError(f"htnet: region_centres: expected a tensor of shape {expected} (per sample: "
                                 f"{', '.join(HTNET_REGIONS)} as (x, y) fractions), got {tuple(region_centres.shape)}")
            centres = region_centres.to(device=image.device, dtype=image.dtype)
        grid = region_grid(centres, region_fraction=self.region_fraction, region_size=self.region_size)
        r = len(HTNET_REGIONS)
        repeated = image.unsqueeze(1).expand(-1, r, -1, -1, -1).reshape(b * r, *image.shape[1:])
        regions = F.grid_sample(repeated, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return regions.reshape(b, r, *regions.shape[1:])

    def forward_features(self, x: torch.Tensor, region_centres: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 3, 1, H, W)`` -> face tokens ``(B, 4 * g3 * g3, D)``; ``region_centres`` as :meth:`forward`."""
        regions = self.crop_regions(self.flow_image(x), region_centres)
        b, r = regions.shape[:2]
        tokens = self.patch_embed(regions.flatten(0, 1)).flatten(2).transpose(1, 2)  # (B*R, g*g, D)
        tokens = (tokens.reshape(b, r, *tokens.shape[1:]) + self.pos_embed).flatten(0, 1)
        tokens = self.region_blocks(tokens)
        tokens = self._merge(self.pair_aggregate, tokens, b, groups=_PAIRS)  # eyes, lips
        tokens = self.pair_blocks(tokens)
        tokens = self._merge(self.face_aggregate, tokens, b, groups=1)
        return self.face_blocks(tokens)

    def _merge(self, aggregate: RegionAggregate, tokens: torch.Tensor, batch: int, *, groups: int) -> torch.Tensor:
        """Aggregate every region's token grid, then concatenate the regions of each of ``groups`` groups.

        ``tokens`` holds the regions' square grids in region order, ``(B * G_prev, regions_per_group * g * g, D)``;
        returns ``(B * groups, regions_per_group' * g' * g', D)``: regions stay in :data:`HTNET_REGIONS` order.
        """
        r, d = len(HTNET_REGIONS), tokens.shape[-1]
        per_region = tokens.reshape(batch * r, -1, d)
        g = math.isqrt(int(per_region.shape[1]))  # a Python int also while tracing (export): the grid is fixed
        grid = aggregate(per_region.transpose(1, 2).reshape(batch * r, d, g, g))  # (B*R, D, g', g')
        pooled = grid.flatten(2).transpose(1, 2)  # (B*R, g'*g', D)
        return pooled.reshape(batch * groups, -1, d)

    def forward_head(self, x: torch.Tensor, *, pre_logits: bool = False) -> torch.Tensor:
        """Mean of the tokens -> LayerNorm -> dropout -> classifier."""
        return self.head(self.norm(x.mean(dim=1)), pre_logits=pre_logits)

    def forward(self, x: torch.Tensor, region_centres: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 3, 1, H, W)`` -> ``(B, num_classes)``.

        Args:
            x: the apex flow.
            region_centres: optional ``(B, 4, 2)`` per-sample region centres ``(x, y)`` as fractions of the
                width and height, in :data:`HTNET_REGIONS` order (from each face's landmarks); None uses
                the model's ``region_centres``.
        """
        return self.forward_head(self.forward_features(x, region_centres))

    def _reset_head(self, num_classes: int) -> None:
        self.head.reset(num_classes)


# -- entry points --------------------------------------------------------------------------------------------


@register_model(family="apex_flow", modality="apex_flow", cpu_friendly=True)
def ststnet(*, num_classes: int, num_frames: int = 1, input_size: int = 28, drop_rate: float = 0.5) -> STSTNet:
    """STSTNet (Liong et al. 2019): three shallow conv streams on u, v, strain; the authors' weights load."""
    return STSTNet(num_classes=num_classes, num_frames=num_frames, input_size=input_size, drop_rate=drop_rate)


@register_model(family="apex_flow", modality="apex_flow", cpu_friendly=True)
def off_apexnet(
    *, num_classes: int, num_frames: int = 1, input_size: int = 28, hidden: int = 1024, drop_rate: float = 0.5,
) -> OffApexNet:
    """Off-ApexNet (Gan et al. 2019): one CNN stream for u, one for v, fused by two FC layers."""
    return OffApexNet(num_classes=num_classes, num_frames=num_frames, input_size=input_size, hidden=hidden,
                      drop_rate=drop_rate)


@register_model(family="apex_flow", modality="apex_flow", cpu_friendly=True)
def htnet(
    *,
    num_classes: int,
    num_frames: int = 1,
    input_size: int = 28,
    region_centres: list[list[float]] | None = None,
    region_fraction: float = 0.5,
    region_size: int = 14,
    patch_size: int = 2,
    dim: int = 64,
    region_depth: int = 2,
    pair_depth: int = 2,
    face_depth: int = 2,
    num_heads: int = 4,
    mlp_ratio: float = 2.0,
    drop_rate: float = 0.0,
) -> HTNet:
    """HTNet-style hierarchical transformer (Wang et al. 2024): eye and lip-corner regions, local then global."""
    return HTNet(num_classes=num_classes, num_frames=num_frames, input_size=input_size, region_centres=region_centres,
                 region_fraction=region_fraction, region_size=region_size, patch_size=patch_size, dim=dim,
                 region_depth=region_depth, pair_depth=pair_depth, face_depth=face_depth, num_heads=num_heads,
                 mlp_ratio=mlp_ratio, drop_rate=drop_rate)
