"""One onset->apex optical flow per clip (u, v, optical strain): computed from frames or read from a file.

Most published MER methods (STSTNet, Off-ApexNet, HTNet, CausalNet) classify this single flow. It is
computed with :func:`~microexp.data.flow.compute_flow` on the onset and apex frames at
``ApexFlowSpec.compute_size`` pixels (TV-L1 by default, as the papers do), the strain from that flow
(:func:`~microexp.data.flow.optical_strain`), and the three channels are then resized to the model's
input side (28 px for STSTNet and HTNet): displacements are rescaled to pixels of the resized image,
strain is dimensionless and kept.

**Files** (a clip table's ``flow_path`` column; see :func:`read_flow_file`):

* an 8-bit image whose R, G, B channels hold u, v and strain, each min-max scaled to 0-255 per image,
  the convention of the public MEGC 2019 composite releases. The absolute scale is lost: a clip that
  moved 0.2 px and one that moved 3 px look alike, only the spatial pattern and the sign balance within
  the image remain;
* a ``.npy`` float array ``(H, W, 2|3)`` in pixels (how MEB stores flows); with two channels the strain
  is computed here.

**What a model sees** (``ApexFlowSpec.encoding``, :data:`ENCODINGS`):

* ``minmax`` (default): each channel min-max scaled to [0, 1] per clip, in the order u, v, strain.
  Computed flows, ``.npy`` flows and 8-bit images give the same input (images to within their 8-bit
  quantisation, 0.5/255), so a model trained on one source predicts on another;
* ``pixels``: u and v in pixels of the model's input, strain as is (computed and ``.npy`` flows only:
  an 8-bit image has no absolute scale, and is refused);
* ``bgr255``: the channels as OpenCV reads the 8-bit image, B, G, R = strain, v, u, raw 0-255 values
  without normalisation: what the STSTNet authors' public per-subject weights were trained on. Computed
  flows are quantised to 8 bits the same way first, so those weights see what they saw in training.

A horizontal flip (training augmentation) mirrors the image and reverses u: ``-u`` in pixels, ``1 - u``
after min-max scaling (exact: the min-max of ``-u`` is one minus that of ``u``), ``255 - u`` for ``bgr255``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from microexp.data.flow import FLOW_METHODS, MIN_SIDE, compute_flow, optical_strain
from microexp.errors import ConfigError, VideoReadError

__all__ = ["ENCODINGS", "FLOW_FILE_SUFFIXES", "ApexFlowSpec", "FlowFileError", "apex_flow_pixels", "encode_flow",
           "flip_encoded", "flow_file_input", "flow_to_image", "read_flow_file", "resize_flow"]

#: what a model sees of the flow (see the module docstring)
ENCODINGS = ("minmax", "pixels", "bgr255")
#: image files read as the 8-bit R, G, B = u, v, strain convention; ``.npy`` is a float array
FLOW_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FLOW_FILE_SUFFIXES = FLOW_IMAGE_SUFFIXES + (".npy",)
#: channel of u in each encoding's channel order (bgr255 is strain, v, u)
_U_CHANNEL = {"minmax": 0, "pixels": 0, "bgr255": 2}


class FlowFileError(VideoReadError):
    """A ``flow_path`` file that is missing, unreadable or of the wrong shape (one line naming it)."""


@dataclass(frozen=True)
class ApexFlowSpec:
    """How the onset->apex flow of a clip is made and presented.

    Args:
        method: flow estimator for clips with frames (:data:`~microexp.data.flow.FLOW_METHODS`).
        compute_size: side of the square onset and apex frames the flow is computed on, before the
            flow is resized to the model's input side.
        encoding: one of :data:`ENCODINGS`.
    """

    method: str = "tvl1"
    compute_size: int = 128
    encoding: str = "minmax"

    def __post_init__(self) -> None:
        if self.method not in FLOW_METHODS:
            raise ConfigError(f"apex flow method {self.method!r}: expected one of {', '.join(FLOW_METHODS)}")
        if isinstance(self.compute_size, bool) or not isinstance(self.compute_size, int) or self.compute_size < MIN_SIDE:
            raise ConfigError(f"apex flow compute_size={self.compute_size!r}: expected an integer >= {MIN_SIDE}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"apex flow encoding {self.encoding!r}: expected one of {', '.join(ENCODINGS)}")


def apex_flow_pixels(onset: np.ndarray, apex: np.ndarray, method: str) -> np.ndarray:
    """``(H, W, 3)`` float32 u, v (pixels) and strain of the flow from the onset frame to the apex frame."""
    flow = compute_flow(onset, apex, method)
    return np.dstack([flow, optical_strain(flow)]).astype(np.float32)


def resize_flow(flow: np.ndarray, size: int) -> np.ndarray:
    """A ``(H, W, 3)`` u, v, strain flow resized to ``(size, size, 3)``; u, v rescaled to the new pixels.

    Area interpolation when shrinking (the mean motion of each new pixel), linear when enlarging. A
    non-square flow is stretched to the square, as the public releases resize aligned faces.
    """
    height, width = flow.shape[:2]
    if (height, width) == (size, size):
        return np.ascontiguousarray(flow, dtype=np.float32)
    shrink = size < min(height, width)
    out = cv2.resize(np.ascontiguousarray(flow, dtype=np.float32), (size, size),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out[..., 0] *= size / width
    out[..., 1] *= size / height
    return out


def _minmax(flow: np.ndarray) -> np.ndarray:
    """Each channel scaled to [0, 1] over the image; a constant channel becomes 0."""
    low = flow.min(axis=(0, 1), keepdims=True)
    span = flow.max(axis=(0, 1), keepdims=True) - low
    return np.where(span > 0, (flow - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def flow_to_image(flow: np.ndarray) -> np.ndarray:
    """The 8-bit R, G, B = u, v, strain image of a ``(H, W, 3)`` flow: each channel min-max scaled to 0-255."""
    return np.rint(_minmax(flow) * 255).astype(np.uint8)


def encode_flow(flow: np.ndarray, encoding: str) -> np.ndarray:
    """A ``(H, W, 3)`` u, v, strain flow in pixels as the model sees it (``(H, W, 3)`` float32)."""
    if encoding == "minmax":
        return _minmax(flow)
    if encoding == "pixels":
        return np.ascontiguousarray(flow, dtype=np.float32)
    if encoding == "bgr255":
        return np.ascontiguousarray(flow_to_image(flow)[..., ::-1], dtype=np.float32)
    raise ConfigError(f"apex flow encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}")


def _encode_image(image: np.ndarray, encoding: str, path: str | os.PathLike) -> np.ndarray:
    """An 8-bit R, G, B = u, v, strain image as the model sees it."""
    if encoding == "pixels":
        raise ConfigError(f"{path}: an 8-bit flow image has no absolute scale, so apex flow encoding 'pixels' cannot "
                          "read it; use encoding 'minmax' (or 'bgr255'), or give .npy flows in pixels")
    if encoding == "bgr255":
        return np.ascontiguousarray(image[..., ::-1], dtype=np.float32)
    return image.astype(np.float32) / 255.0


def flip_encoded(flow: np.ndarray, encoding: str) -> np.ndarray:
    """An encoded ``(H, W, 3)`` flow mirrored left-right, with u reversed (see the module docstring)."""
    out = np.ascontiguousarray(flow[:, ::-1], dtype=np.float32)
    u = _U_CHANNEL[encoding]
    out[..., u] = {"minmax": 1.0 - out[..., u], "pixels": -out[..., u], "bgr255": 255.0 - out[..., u]}[encoding]
    return out


def read_flow_file(path: str | os.PathLike) -> np.ndarray:
    """A flow file as stored: an 8-bit image as uint8 ``(H, W, 3)`` R, G, B; a ``.npy`` as float32 ``(H, W, 3)``.

    Raises:
        FlowFileError: missing file, unreadable image or array, wrong shape or channel count (one line
            naming the file and what was expected).
    """
    name = str(path)
    suffix = Path(name).suffix.lower()
    if not os.path.isfile(name):
        raise FlowFileError(f"{name}: flow file not found")
    if suffix == ".npy":
        try:
            array = np.load(name, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise FlowFileError(f"{name}: not a readable .npy array ({' '.join(str(exc).split())})") from None
        if array.ndim != 3 or array.shape[-1] not in (2, 3) or not np.issubdtype(array.dtype, np.floating):
            raise FlowFileError(f"{name}: .npy flow of shape {array.shape} and dtype {array.dtype}: expected a float "
                                "array (H, W, 2) of u, v in pixels or (H, W, 3) of u, v, strain")
        if min(array.shape[:2]) < 2 or not np.isfinite(array).all():
            raise FlowFileError(f"{name}: .npy flow must be at least 2x2 px and finite")
        array = array.astype(np.float32)
        if array.shape[-1] == 2:
            array = np.dstack([array, optical_strain(array)])
        return array
    if suffix not in FLOW_IMAGE_SUFFIXES:
        raise FlowFileError(f"{name}: flow file type {suffix or '(none)'!r}: expected an image "
                            f"({', '.join(FLOW_IMAGE_SUFFIXES)}) or a .npy array")
    # imdecode of the bytes: cv2.imread cannot open some non-ASCII paths, and names with spaces are fine either way
    data = np.fromfile(name, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise FlowFileError(f"{name}: unreadable image (empty, truncated or not an image)")
    channels = 1 if image.ndim == 2 else image.shape[-1]
    if image.dtype != np.uint8 or channels != 3:
        raise FlowFileError(f"{name}: flow image with {channels} channel(s) of {image.dtype}: expected 8-bit with 3 "
                            "channels (R, G, B = u, v, strain)")
    return np.ascontiguousarray(image[..., ::-1])  # OpenCV's B, G, R -> R, G, B = u, v, strain


def flow_file_input(path: str | os.PathLike, *, size: int, encoding: str) -> np.ndarray:
    """A ``flow_path`` file as the model sees it: ``(size, size, 3)`` float32 in ``encoding``.

    An image is resized as an image (area interpolation) and divided by 255 (``minmax``): its values
    were min-max scaled when it was written; a ``.npy`` flow is resized as a flow (:func:`resize_flow`)
    and then encoded like a computed one.
    """
    stored = read_flow_file(path)
    if stored.dtype == np.uint8:
        if stored.shape[:2] != (size, size):
            shrink = size < min(stored.shape[:2])
            stored = cv2.resize(stored, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return _encode_image(stored, encoding, path)
    return encode_flow(resize_flow(stored, size), encoding)
