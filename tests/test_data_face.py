"""Face detection with OpenCV's bundled cascade and one stable square crop per clip."""

import numpy as np
import pytest

from microexp.data.face import (FaceBox, NoFaceError, crop_frames, detect_faces, median_box, probe_positions,
                                stable_face_box)
from microexp.synth import plan_dataset, render_clip


@pytest.fixture(scope="module")
def faces():
    spec = plan_dataset(preset="easy", subjects=1, clips=1, seed=4)[0]
    return render_clip(spec, size=128, frame_numbers=[1, 2, 3, 4, 5]).frames


def _pad(frames, x=300, y=200, height=480, width=640):
    """Synthetic face crops placed at a known offset in larger frames of their border colour."""
    canvas = np.empty((len(frames), height, width, 3), np.uint8)
    canvas[:] = np.median(frames[:, :, :4].reshape(-1, 3), axis=0).astype(np.uint8)
    canvas[:, y:y + 128, x:x + 128] = frames
    return canvas


def test_detected_box_covers_the_known_face_region(faces):
    frames = _pad(faces)
    assert detect_faces(frames[0])  # the cascade finds the face on a single frame
    box, found = stable_face_box(list(frames))
    assert found == len(frames) and box.w == box.h
    face = FaceBox(300, 200, 128, 128)
    ix = max(0, min(box.x + box.w, face.x + face.w) - max(box.x, face.x))
    iy = max(0, min(box.y + box.h, face.y + face.h) - max(box.y, face.y))
    iou = ix * iy / (box.w * box.h + face.w * face.h - ix * iy)
    assert iou > 0.7, (box, iou)
    crops = crop_frames(frames, box)
    assert crops.shape == (len(frames), box.h, box.w, 3)


def test_box_is_clamped_inside_the_frame(faces):
    frames = _pad(faces, x=0, y=0, height=160, width=200)  # face in the corner: the margin would leave the frame
    box, _ = stable_face_box(list(frames), margin=1.0)
    assert box.x >= 0 and box.y >= 0 and box.x + box.w <= 200 and box.y + box.h <= 160 and box.w == box.h == 160


def test_probe_positions_spread_over_the_clip():
    assert probe_positions(300) == [0, 75, 150, 224, 299]
    assert probe_positions(3) == [0, 1, 2] and probe_positions(1) == [0]
    assert probe_positions(10, probes=2) == [0, 9]
    with pytest.raises(ValueError, match="frame_count=0"):
        probe_positions(0)


def test_median_box_is_clamped_and_must_fit():
    boxes = [FaceBox(10, 10, 40, 40), FaceBox(14, 12, 44, 44), FaceBox(90, 90, 60, 60)]
    assert median_box(boxes, (200, 200)) == FaceBox(14, 12, 44, 44)  # median centre (36, 34), side 44
    assert median_box([FaceBox(-5, 70, 40, 40)], (100, 100)) == FaceBox(0, 60, 40, 40)
    with pytest.raises(ValueError, match="a 40 px face box does not fit 30x100 frames"):
        median_box([FaceBox(0, 0, 40, 40)], (100, 30))


def test_no_face_is_a_clear_error():
    flat = np.full((3, 120, 160, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match="no face found on the 3 frame"):
        stable_face_box(list(flat))
    assert crop_frames(flat, None) is flat
