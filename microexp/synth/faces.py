"""Procedural frontal faces for the synthetic benchmark (drawing only; no motion, no files).

A face is described by :class:`FaceGeometry` (positions and sizes in *image units*: fractions of the
image side, x to the right, y down) and :class:`FaceLook` (colours, texture seed, lighting). Both are
drawn once per subject from a NumPy generator; a clip then perturbs the geometry slightly
(:func:`jitter_geometry`) so that no single frame tells where the neutral face of that clip was.

Sides: index 0 is the subject's **right** (the image's left, ``x < cx``), index 1 the subject's left,
as in FACS laterality codes ('R12' moves the lip corner at the image's left).

:func:`draw_face` renders the neutral face with open and, optionally, closed eyes at ``size`` pixels
(drawn supersampled with anti-aliased OpenCV primitives, then area-downsampled), as float32 RGB in
0..255, ``(H, W, 3)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

__all__ = ["EyeBox", "FaceGeometry", "FaceLook", "RenderedFace", "draw_face", "jitter_geometry", "random_face"]

#: fixed-point bits used for sub-pixel OpenCV drawing
_SHIFT = 4
_ONE = 1 << _SHIFT

_SKIN_TONES = np.array(
    [(243, 211, 186), (228, 180, 148), (205, 150, 114), (172, 118, 84), (132, 88, 60), (96, 64, 46)], np.float32
)
_HAIR_COLOURS = np.array(
    [(28, 24, 22), (52, 36, 28), (92, 62, 40), (150, 110, 70), (196, 166, 116), (150, 146, 142), (128, 62, 34)],
    np.float32,
)
_HAIR_WEIGHTS = np.array([0.32, 0.25, 0.17, 0.08, 0.07, 0.06, 0.05])
_IRIS_COLOURS = np.array([(60, 40, 28), (96, 64, 38), (70, 100, 130), (90, 110, 70), (40, 30, 25)], np.float32)


@dataclass(frozen=True)
class FaceGeometry:
    """Where the facial features are, in image units (fractions of the image side).

    Per-side tuples are ``(subject's right = image left, subject's left = image right)``.
    """

    cx: float
    cy: float
    half_width: float
    half_height: float
    shape_exponent: float  # superellipse exponent of the face outline (2 = ellipse)
    jaw_taper: float  # how much the outline narrows towards the chin
    eye_y: tuple[float, float]
    eye_dx: float  # half the distance between the eye centres
    eye_half_width: float
    eye_upper: tuple[float, float]  # opening above the eye line
    eye_lower: tuple[float, float]  # opening below the eye line
    eye_tilt: float  # outer corner raised by this fraction of the eye half width
    iris_radius: float
    brow_inner: tuple[tuple[float, float], tuple[float, float]]  # (x, y) per side
    brow_outer: tuple[tuple[float, float], tuple[float, float]]
    brow_arch: float
    brow_thickness: float
    nose_tip_y: float
    nose_half_width: tuple[float, float]
    nostril_y: tuple[float, float]
    mouth_y: float
    mouth_corner: tuple[tuple[float, float], tuple[float, float]]  # (x, y) per side
    upper_lip: float  # thickness at the centre
    lower_lip: float
    hairline: float  # y of the hairline at the centre
    ear_y: float

    def side_sign(self, side: int) -> float:
        """-1 for side 0 (image left), +1 for side 1: multiplies 'outward' x displacements."""
        return -1.0 if side == 0 else 1.0

    def eye_center(self, side: int) -> tuple[float, float]:
        return self.cx + self.side_sign(side) * self.eye_dx, self.eye_y[side]

    def landmarks(self) -> dict[str, tuple[float, float]]:
        """Anchor points of the action-unit displacement fields, ``name_side -> (x, y)`` (side 0 or 1)."""
        points: dict[str, tuple[float, float]] = {}
        ew = self.eye_half_width
        for side in (0, 1):
            sx = self.side_sign(side)
            ex, ey = self.eye_center(side)
            mx, my = self.mouth_corner[side]
            points[f"brow_inner_{side}"] = self.brow_inner[side]
            bix, biy = self.brow_inner[side]
            box, boy = self.brow_outer[side]
            points[f"brow_mid_{side}"] = (0.5 * (bix + box), 0.5 * (biy + boy) - 0.6 * self.brow_arch)
            points[f"brow_outer_{side}"] = self.brow_outer[side]
            points[f"upper_lid_{side}"] = (ex, ey - self.eye_upper[side])
            points[f"lower_lid_{side}"] = (ex, ey + self.eye_lower[side])
            points[f"cheek_{side}"] = (ex + sx * 0.35 * ew, ey + 1.55 * ew)
            points[f"nose_wing_{side}"] = (self.cx + sx * self.nose_half_width[side], self.nostril_y[side] - 0.2 * ew)
            points[f"upper_lip_{side}"] = (self.cx + 0.45 * (mx - self.cx), self.mouth_y - 0.85 * self.upper_lip)
            points[f"mouth_corner_{side}"] = (mx, my)
            points[f"lower_lip_{side}"] = (self.cx + 0.45 * (mx - self.cx), self.mouth_y + 0.8 * self.lower_lip)
        points["glabella"] = (self.cx, 0.5 * (self.brow_inner[0][1] + self.brow_inner[1][1]) + 0.3 * ew)
        points["upper_lip_center"] = (self.cx, self.mouth_y - self.upper_lip)
        points["lower_lip_center"] = (self.cx, self.mouth_y + self.lower_lip)
        points["chin"] = (self.cx, self.cy + 0.78 * self.half_height)
        return points


@dataclass(frozen=True)
class FaceLook:
    """Colours, texture and lighting of a subject."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    background: tuple[float, float, float]
    clothing: tuple[float, float, float]
    light: tuple[float, float]  # direction of the key light (x, y), unit-ish
    texture_seed: int
    long_hair: bool


class _Mask(NamedTuple):
    """A float32 mask in 0..1 covering ``data.shape`` pixels from ``(y0, x0)`` of the canvas."""

    data: np.ndarray
    y0: int
    x0: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.data.shape[0]), slice(self.x0, self.x0 + self.data.shape[1])


class EyeBox(NamedTuple):
    """An eye's almond in pixels of the rendered size: centre, half width, opening above/below."""

    x: float
    y: float
    half_width: float
    upper: float
    lower: float


class RenderedFace(NamedTuple):
    """Neutral face images, float32 RGB 0..255 ``(H, W, 3)``; ``closed`` is None unless asked for."""

    open: np.ndarray
    closed: np.ndarray | None
    eyes: tuple[EyeBox, EyeBox]


def random_face(rng: np.random.Generator) -> tuple[FaceGeometry, FaceLook]:
    """Draw one subject's face geometry and look."""
    u = rng.uniform
    cx = 0.5 + u(-0.015, 0.015)
    cy = 0.53 + u(-0.015, 0.015)
    fw = u(0.265, 0.305)
    fh = fw * u(1.3, 1.45)
    ew = fw * u(0.19, 0.225)
    eye_dx = fw * u(0.37, 0.43)
    eye_y = cy - fh * u(0.1, 0.17)
    up = ew * u(0.4, 0.52)
    low = ew * u(0.26, 0.34)
    brow_gap = ew * u(0.85, 1.15)
    brow_inner, brow_outer = [], []
    for side in (0, 1):
        sx = -1.0 if side == 0 else 1.0
        biy = eye_y - brow_gap
        brow_inner.append((cx + sx * (eye_dx - ew * u(0.85, 1.05)), biy))
        brow_outer.append((cx + sx * (eye_dx + ew * u(1.05, 1.3)), biy + ew * u(-0.05, 0.3)))
    nose_tip_y = cy + fh * u(0.14, 0.22)
    nose_w = fw * u(0.16, 0.21)
    nostril_y = nose_tip_y + ew * 0.15
    mouth_y = nose_tip_y + fh * u(0.2, 0.26)
    mouth_w = fw * u(0.3, 0.38)
    corner_y = mouth_y + ew * u(-0.05, 0.08)
    geometry = FaceGeometry(
        cx=cx,
        cy=cy,
        half_width=fw,
        half_height=fh,
        shape_exponent=u(2.0, 2.6),
        jaw_taper=u(0.08, 0.28),
        eye_y=(eye_y, eye_y),
        eye_dx=eye_dx,
        eye_half_width=ew,
        eye_upper=(up, up),
        eye_lower=(low, low),
        eye_tilt=u(-0.05, 0.15),
        iris_radius=ew * u(0.4, 0.46),
        brow_inner=(brow_inner[0], brow_inner[1]),
        brow_outer=(brow_outer[0], brow_outer[1]),
        brow_arch=ew * u(0.12, 0.3),
        brow_thickness=ew * u(0.3, 0.45),
        nose_tip_y=nose_tip_y,
        nose_half_width=(nose_w, nose_w),
        nostril_y=(nostril_y, nostril_y),
        mouth_y=mouth_y,
        mouth_corner=((cx - mouth_w, corner_y), (cx + mouth_w, corner_y)),
        upper_lip=fw * u(0.085, 0.11),
        lower_lip=fw * u(0.1, 0.14),
        hairline=cy - fh * u(0.62, 0.8),
        ear_y=eye_y + ew * u(0.3, 0.7),
    )
    tone = u(0, len(_SKIN_TONES) - 1)
    lo = int(np.floor(tone))
    hi = min(lo + 1, len(_SKIN_TONES) - 1)
    skin = (1 - (tone - lo)) * _SKIN_TONES[lo] + (tone - lo) * _SKIN_TONES[hi]
    skin = np.clip(skin + rng.normal(0, 4, 3), 30, 250)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS)] + rng.normal(0, 5, 3)
    lips = np.clip(skin * u(0.6, 0.72) + np.array([62, 8, 14]) * u(0.6, 1.0), 20, 250)
    iris = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] + rng.normal(0, 6, 3)
    background = rng.uniform(70, 200) + rng.normal(0, 22, 3)
    clothing = rng.uniform(30, 210, 3)
    angle = rng.uniform(-np.pi, np.pi)
    look = FaceLook(
        skin=_tuple3(skin),
        hair=_tuple3(np.clip(hair, 10, 240)),
        lips=_tuple3(lips),
        iris=_tuple3(np.clip(iris, 10, 220)),
        background=_tuple3(np.clip(background, 30, 230)),
        clothing=_tuple3(clothing),
        light=(float(0.35 * np.cos(angle)), float(-0.25 + 0.2 * np.sin(angle))),
        texture_seed=int(rng.integers(2**31)),
        long_hair=bool(rng.random() < 0.4),
    )
    return geometry, look


def jitter_geometry(geometry: FaceGeometry, rng: np.random.Generator, amount: float) -> FaceGeometry:
    """Move the expressive features independently per side by up to ``amount`` image units.

    Brows, lids, nose wings, lip corners and lip thicknesses move; the face outline does not. Used per clip
    so that the neutral face of a clip is not the subject's average face: an apex frame alone cannot be
    compared with a known neutral.
    """

    def j(scale: float = 1.0) -> float:
        return float(rng.uniform(-amount, amount) * scale)

    g = geometry
    return dataclasses.replace(
        g,
        eye_y=(g.eye_y[0] + j(0.5), g.eye_y[1] + j(0.5)),
        eye_upper=(max(g.eye_upper[0] + j(), 0.2 * g.eye_half_width),
                   max(g.eye_upper[1] + j(), 0.2 * g.eye_half_width)),
        eye_lower=(max(g.eye_lower[0] + j(), 0.15 * g.eye_half_width),
                   max(g.eye_lower[1] + j(), 0.15 * g.eye_half_width)),
        brow_inner=tuple((x + j(), y + j()) for x, y in g.brow_inner),  # type: ignore[arg-type]
        brow_outer=tuple((x + j(0.6), y + j()) for x, y in g.brow_outer),  # type: ignore[arg-type]
        nose_half_width=(g.nose_half_width[0] + j(0.6), g.nose_half_width[1] + j(0.6)),
        nostril_y=(g.nostril_y[0] + j(), g.nostril_y[1] + j()),
        mouth_corner=tuple((x + j(), y + j()) for x, y in g.mouth_corner),  # type: ignore[arg-type]
        upper_lip=max(g.upper_lip + j(), 0.02 * g.half_width),
        lower_lip=max(g.lower_lip + j(), 0.03 * g.half_width),
        mouth_y=g.mouth_y + j(0.5),
    )


def draw_face(
    geometry: FaceGeometry, look: FaceLook, size: int, *, closed_eyes: bool = False, supersample: int | None = None
) -> RenderedFace:
    """Render the neutral face.

    Args:
        geometry: feature positions in image units.
        look: colours and texture.
        size: output side in pixels (square image).
        closed_eyes: also render the same face with closed eyes (for blinks).
        supersample: drawing resolution factor (default: enough for >= 192 px drawing, at least 2).

    Returns:
        :class:`RenderedFace` with float32 RGB ``(size, size, 3)`` images in 0..255.
    """
    ss = supersample or max(2, int(np.ceil(192 / size)))
    canvas = _Canvas(size * ss, geometry, look)
    base = canvas.draw_base()
    open_img = canvas.draw_eyes(base.copy(), closed=False)
    closed_img = canvas.draw_eyes(base, closed=True) if closed_eyes else None
    out_open = _downsample(open_img, size)
    out_closed = _downsample(closed_img, size) if closed_img is not None else None
    eyes = tuple(
        EyeBox(
            x=geometry.eye_center(side)[0] * size,
            y=geometry.eye_y[side] * size,
            half_width=geometry.eye_half_width * size,
            upper=geometry.eye_upper[side] * size,
            lower=geometry.eye_lower[side] * size,
        )
        for side in (0, 1)
    )
    return RenderedFace(out_open, out_closed, eyes)  # type: ignore[arg-type]


def _tuple3(values: np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def _downsample(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


class _Canvas:
    """Drawing helpers at the supersampled resolution ``res``; images are float32 RGB 0..255."""

    def __init__(self, res: int, geometry: FaceGeometry, look: FaceLook) -> None:
        self.res = res
        self.g = geometry
        self.look = look
        self.rng = np.random.default_rng(look.texture_seed)
        coords = (np.arange(res, dtype=np.float32) + 0.5) / res
        self.x = coords[None, :]
        self.y = coords[:, None]

    # -- primitives -------------------------------------------------------------------------------------
    def pts(self, points: np.ndarray, x0: int = 0, y0: int = 0) -> np.ndarray:
        """Image units (N, 2) -> fixed-point pixel coordinates (relative to ``(x0, y0)``) for OpenCV."""
        px = np.asarray(points, np.float64) * self.res - np.array([x0, y0], np.float64)
        return np.round(px * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def _roi(self, points: np.ndarray, margin: float) -> tuple[int, int, int, int]:
        px = np.asarray(points, np.float64) * self.res
        lo = np.floor(px.min(axis=0) - margin).astype(int)
        hi = np.ceil(px.max(axis=0) + margin).astype(int) + 1
        x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
        x1, y1 = min(int(hi[0]), self.res), min(int(hi[1]), self.res)
        return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)

    def poly_mask(self, points: np.ndarray, blur: float = 0.0) -> _Mask:
        x0, y0, x1, y1 = self._roi(points, 3.5 * blur * self.res + 2)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [self.pts(points, x0, y0)], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
        return _Mask(self._finish(mask, blur), y0, x0)

    def line_mask(self, points: np.ndarray, thickness: float, blur: float = 0.0) -> _Mask:
        width = max(1, int(round(thickness * self.res)))
        x0, y0, x1, y1 = self._roi(points, 3.5 * blur * self.res + width + 2)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.polylines(mask, [self.pts(points, x0, y0)], False, 255, thickness=width, lineType=cv2.LINE_AA,
                      shift=_SHIFT)
        return _Mask(self._finish(mask, blur), y0, x0)

    def ellipse_mask(self, cx: float, cy: float, ax: float, ay: float, blur: float = 0.0) -> _Mask:
        return self.poly_mask(_ellipse_points(cx, cy, ax, ay), blur)

    def _finish(self, mask: np.ndarray, blur: float) -> np.ndarray:
        out = mask.astype(np.float32) * (1.0 / 255.0)
        if blur > 0:
            sigma = blur * self.res
            out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
        return out

    @staticmethod
    def paint(image: np.ndarray, mask: _Mask, colour: np.ndarray | tuple, alpha: float = 1.0) -> None:
        """In place: ``image = image * (1 - a) + colour * a`` with ``a = alpha * mask``.

        ``colour`` is an RGB triple or a full-size image.
        """
        sl = mask.slices()
        sub = image[sl]
        col = np.asarray(colour, np.float32)
        if col.ndim == 3:
            col = col[sl]
        sub += (col - sub) * (mask.data * alpha)[..., None]

    @staticmethod
    def shade(image: np.ndarray, mask: _Mask, factor: float) -> None:
        """In place: multiply by ``1 + factor * mask`` (negative factor darkens)."""
        image[mask.slices()] *= (1.0 + factor * mask.data)[..., None]

    def full(self, data: np.ndarray) -> _Mask:
        return _Mask(data, 0, 0)

    def to_full(self, mask: _Mask) -> np.ndarray:
        out = np.zeros((self.res, self.res), np.float32)
        out[mask.slices()] = mask.data
        return out

    def smooth_noise(self, cells: int, anisotropy: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """Zero-mean, unit-ish smooth noise from a ``cells`` x ``cells`` grid, bicubic upsampled."""
        grid = self.rng.standard_normal((cells, cells)).astype(np.float32)
        noise = cv2.resize(grid, (self.res, self.res), interpolation=cv2.INTER_CUBIC)
        if anisotropy != (1.0, 1.0):
            noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=anisotropy[0], sigmaY=anisotropy[1])
            noise /= noise.std() + 1e-6
        return noise

    # -- the face ---------------------------------------------------------------------------------------
    def draw_base(self) -> np.ndarray:
        """Everything but the eyes: background, hair, neck, head, texture, shading, nose, mouth, brows."""
        g, look, res = self.g, self.look, self.res
        fw, fh = g.half_width, g.half_height
        bg = np.asarray(look.background, np.float32)
        image = np.empty((res, res, 3), np.float32)
        image[:] = bg
        image *= (1.0 + 0.12 * (0.5 - self.y) + 0.05 * self.smooth_noise(3))[..., None]

        skin = np.asarray(look.skin, np.float32)
        hair = np.asarray(look.hair, np.float32)
        hair_tex = 1.0 + 0.1 * self.smooth_noise(48, anisotropy=(0.6, 4.0))
        hair_img = hair[None, None, :] * hair_tex[..., None]

        # hair behind the head
        if look.long_hair:
            back = self.ellipse_mask(g.cx, g.cy + 0.1 * fh, fw * 1.22, fh * 1.12, blur=0.004)
        else:
            back = self.ellipse_mask(g.cx, g.cy - 0.08 * fh, fw * 1.1, fh * 1.0, blur=0.004)
        self.paint(image, back, hair_img)
        # shoulders and neck
        self.paint(image, self.ellipse_mask(g.cx, g.cy + fh * 1.75, fw * 2.2, fh * 0.75, blur=0.003),
                   look.clothing)
        neck = self.poly_mask(np.array([
            (g.cx - 0.52 * fw, g.cy + 0.5 * fh), (g.cx + 0.52 * fw, g.cy + 0.5 * fh),
            (g.cx + 0.58 * fw, g.cy + 1.25 * fh), (g.cx - 0.58 * fw, g.cy + 1.25 * fh),
        ]), blur=0.003)
        self.paint(image, neck, skin * 0.78)
        # ears
        for side in (0, 1):
            sx = g.side_sign(side)
            self.paint(image, self.ellipse_mask(g.cx + sx * fw * 0.97, g.ear_y, fw * 0.13, fh * 0.16, blur=0.003),
                       skin * 0.9)

        # head: skin with texture and shading
        face = self.to_full(self.poly_mask(self._outline(), blur=0.002))
        nx = (self.x - g.cx) / fw
        ny = (self.y - g.cy) / fh
        r2 = nx * nx + ny * ny
        lx, ly = look.light
        shading = 1.0 + 0.06 - 0.28 * np.clip(r2, 0, 1.3) ** 2 + 0.1 * (lx * nx + ly * ny)
        texture = 1.0 + 0.035 * self.smooth_noise(6) + 0.02 * self.smooth_noise(24)
        fine = self.rng.standard_normal((res, res)).astype(np.float32)
        texture += 0.018 * cv2.GaussianBlur(fine, (0, 0), sigmaX=0.0015 * res + 0.4)
        skin_img = skin[None, None, :] * (shading * texture)[..., None]
        # warmer cheeks
        for side in (0, 1):
            sx = g.side_sign(side)
            ex, ey = g.eye_center(side)
            blush = self.ellipse_mask(ex + sx * 0.2 * g.eye_half_width, ey + 2.2 * g.eye_half_width,
                                      1.3 * g.eye_half_width, 1.0 * g.eye_half_width, blur=0.02)
            skin_img[blush.slices()] += np.array([11, -4, -4], np.float32) * blush.data[..., None]
        self.paint(image, self.full(face), skin_img)

        # hair fringe on the forehead: inside the head, above a curved hairline
        curve = g.hairline + 0.18 * fh * np.clip(np.abs(self.x - g.cx) / fw, 0, 1.2) ** 2
        fringe = (self.y < curve).astype(np.float32) * face
        fringe = cv2.GaussianBlur(fringe, (0, 0), sigmaX=0.003 * res)
        self.paint(image, self.full(fringe), hair_img)

        self._draw_sockets(image)
        self._draw_nose(image)
        self._draw_mouth(image)
        self._draw_brows(image, hair_img)
        # chin and jaw shadow
        chin = self.ellipse_mask(g.cx, g.cy + 0.95 * fh, 0.55 * fw, 0.12 * fh, blur=0.02)
        self.shade(image, chin._replace(data=chin.data * face[chin.slices()]), -0.08)
        return image

    def _outline(self) -> np.ndarray:
        g = self.g
        t = np.linspace(0, 2 * np.pi, 160, endpoint=False)
        c, s = np.cos(t), np.sin(t)
        e = 2.0 / g.shape_exponent
        taper = 1.0 - g.jaw_taper * np.clip(s, 0, None) ** 3
        x = g.cx + g.half_width * np.sign(c) * np.abs(c) ** e * taper
        y = g.cy + g.half_height * np.sign(s) * np.abs(s) ** e
        return np.stack([x, y], axis=1)

    def _draw_sockets(self, image: np.ndarray) -> None:
        g = self.g
        ew = g.eye_half_width
        for side in (0, 1):
            ex, ey = g.eye_center(side)
            self.shade(image, self.ellipse_mask(ex, ey - 0.2 * ew, 1.25 * ew, 0.95 * ew, blur=0.018), -0.2)
        # nose bridge between the eyes slightly lighter
        self.shade(image, self.ellipse_mask(g.cx, g.eye_y[0] + 0.2 * ew, 0.35 * ew, 1.2 * ew, blur=0.012), 0.05)

    def _draw_nose(self, image: np.ndarray) -> None:
        g = self.g
        ew = g.eye_half_width
        tip = g.nose_tip_y
        top = 0.5 * (g.eye_y[0] + g.eye_y[1])
        # bridge highlight and side shadows
        self.shade(image, self.ellipse_mask(g.cx, 0.5 * (top + tip), 0.22 * ew, 0.5 * (tip - top), blur=0.01), 0.07)
        for side in (0, 1):
            sx = g.side_sign(side)
            w = g.nose_half_width[side]
            side_line = np.array([(g.cx + sx * 0.35 * ew, top + 0.3 * ew), (g.cx + sx * 0.55 * w, tip - 0.4 * ew),
                                  (g.cx + sx * 0.85 * w, tip)])
            self.shade(image, self.line_mask(side_line, 0.012, blur=0.008), -0.18)
            # nose wing (ala) crease and nostril
            ny = g.nostril_y[side]
            wing = _arc(g.cx + sx * 0.72 * w, ny - 0.2 * ew, 0.32 * w, 0.45 * ew, 200 if side == 0 else -20,
                        340 if side == 0 else 160)
            self.shade(image, self.line_mask(wing, 0.006, blur=0.003), -0.35)
            self.shade(image, self.ellipse_mask(g.cx + sx * 0.45 * w, ny, 0.22 * w, 0.1 * w + 0.06 * ew, blur=0.003),
                       -0.55)
        self.shade(image, self.ellipse_mask(g.cx, tip - 0.05 * ew, 0.35 * ew, 0.28 * ew, blur=0.008), 0.08)
        self.shade(image, self.ellipse_mask(g.cx, g.nostril_y[0] + 0.35 * ew, 0.6 * ew, 0.18 * ew, blur=0.008), -0.15)
        # philtrum
        self.shade(image, self.ellipse_mask(g.cx, 0.5 * (g.nostril_y[0] + g.mouth_y), 0.12 * ew, 0.4 * ew,
                                            blur=0.006), -0.06)

    def _draw_mouth(self, image: np.ndarray) -> None:
        g = self.g
        (lx, ly), (rx, ry) = g.mouth_corner
        cx, my, ul, ll = g.cx, g.mouth_y, g.upper_lip, g.lower_lip
        lips = np.asarray(self.look.lips, np.float32)

        def along(t: np.ndarray, lo: float, hi: float) -> np.ndarray:
            return lo + (hi - lo) * t

        t = np.linspace(0, 1, 25)
        xs = along(t, lx, rx)
        base_y = along(t, ly, ry)
        # the mouth line bends a little down in the middle
        line_y = base_y + 0.25 * ul * np.sin(np.pi * t) + (my - 0.5 * (ly + ry)) * np.sin(np.pi * t)
        # upper lip with a cupid's bow
        bow = np.abs(t - 0.5) * 2
        upper_edge = line_y - ul * np.sin(np.pi * t) ** 0.7 * (1.0 - 0.25 * np.exp(-(bow / 0.12) ** 2))
        lower_edge = line_y + ll * np.sin(np.pi * t) ** 0.8
        upper = np.concatenate([np.stack([xs, upper_edge], 1), np.stack([xs[::-1], line_y[::-1]], 1)])
        lower = np.concatenate([np.stack([xs, line_y], 1), np.stack([xs[::-1], lower_edge[::-1]], 1)])
        self.paint(image, self.poly_mask(upper, blur=0.002), lips * 0.88)
        self.paint(image, self.poly_mask(lower, blur=0.002), lips)
        # lower-lip highlight, mouth line, shadow under the lower lip
        self.shade(image, self.ellipse_mask(cx, my + 0.45 * ll, 0.35 * (rx - lx), 0.3 * ll, blur=0.006), 0.12)
        self.shade(image, self.line_mask(np.stack([xs, line_y], 1), 0.007, blur=0.002), -0.55)
        self.shade(image, self.ellipse_mask(cx, my + 1.35 * ll, 0.3 * (rx - lx), 0.3 * ll, blur=0.01), -0.12)
        for x, y in g.mouth_corner:
            self.shade(image, self.ellipse_mask(x, y, 0.012, 0.008, blur=0.004), -0.3)

    def _draw_brows(self, image: np.ndarray, hair_img: np.ndarray) -> None:
        g = self.g
        t = np.linspace(0, 1, 24)
        for side in (0, 1):
            (ix, iy), (ox, oy) = g.brow_inner[side], g.brow_outer[side]
            xs = ix + (ox - ix) * t
            centre = iy + (oy - iy) * t - g.brow_arch * np.sin(np.pi * np.clip(t * 1.15, 0, 1)) ** 1.2
            half = 0.5 * g.brow_thickness * (1.1 - 0.6 * t)
            outline = np.concatenate([np.stack([xs, centre - half], 1), np.stack([xs[::-1], (centre + half)[::-1]], 1)])
            mask = self.poly_mask(outline, blur=0.0025)
            self.paint(image, mask, hair_img * 0.85, 0.85)

    def draw_eyes(self, image: np.ndarray, *, closed: bool) -> np.ndarray:
        """Draw both eyes (open or closed lids) onto ``image`` (modified and returned)."""
        g = self.g
        ew = g.eye_half_width
        skin = np.asarray(self.look.skin, np.float32)
        lash = np.asarray(self.look.hair, np.float32) * 0.5
        t = np.linspace(-1, 1, 31)
        for side in (0, 1):
            sx = g.side_sign(side)
            ex, ey = g.eye_center(side)
            xs = ex + sx * t * ew  # t = 1 is the outer corner
            tilt = -g.eye_tilt * ew * t
            up = ey + tilt - g.eye_upper[side] * (1 - t**2) ** 0.75
            low = ey + tilt + g.eye_lower[side] * (1 - t**2) ** 0.9
            crease = up - 0.45 * g.eye_upper[side] * (1 - t**2) ** 0.6 - 0.08 * ew
            almond = np.concatenate([np.stack([xs, up], 1), np.stack([xs[::-1], low[::-1]], 1)])
            self.shade(image, self.line_mask(np.stack([xs, crease], 1)[3:-3], 0.005, blur=0.003), -0.22)
            if closed:
                lid = self.poly_mask(almond, blur=0.002)
                self.paint(image, lid, skin * 0.86)
                closed_line = ey + tilt + 0.55 * g.eye_lower[side] * (1 - t**2) ** 0.9
                self.paint(image, self.line_mask(np.stack([xs, closed_line], 1), 0.009, blur=0.002), lash, 0.9)
                continue
            eye = np.zeros_like(image)
            falloff = 0.85 + 0.15 * np.clip(1 - np.abs(self.x - ex) / ew, 0, 1)
            eye[:] = np.array([232, 226, 220], np.float32) * falloff[..., None]
            iris_x = ex + 0.04 * sx * ew
            self.paint(eye, self.ellipse_mask(iris_x, ey, g.iris_radius, g.iris_radius, blur=0.0015), self.look.iris)
            self.shade(eye, self.ellipse_mask(iris_x, ey, g.iris_radius, g.iris_radius, blur=0.006), -0.2)
            self.paint(eye, self.ellipse_mask(iris_x, ey, 0.45 * g.iris_radius, 0.45 * g.iris_radius, blur=0.001),
                       (12, 10, 10))
            self.paint(eye, self.ellipse_mask(iris_x - 0.3 * g.iris_radius, ey - 0.35 * g.iris_radius,
                                              0.14 * g.iris_radius, 0.14 * g.iris_radius, blur=0.001), (250, 250, 250),
                       0.85)
            # the upper lid casts a shadow on the eyeball
            self.shade(eye, self.line_mask(np.stack([xs, up + 0.15 * g.eye_upper[side]], 1), 0.012, blur=0.005), -0.3)
            mask = self.poly_mask(almond, blur=0.001)
            self.paint(image, mask, eye)
            self.paint(image, self.line_mask(np.stack([xs, up], 1), 0.011, blur=0.0015), lash, 0.95)
            self.paint(image, self.line_mask(np.stack([xs, low], 1)[2:-2], 0.005, blur=0.002), lash, 0.45)
        return image


def _ellipse_points(cx: float, cy: float, ax: float, ay: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)


def _arc(cx: float, cy: float, ax: float, ay: float, start_deg: float, end_deg: float, n: int = 16) -> np.ndarray:
    t = np.deg2rad(np.linspace(start_deg, end_deg, n))
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)
