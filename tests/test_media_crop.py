"""Input reading (images, folders, videos) and face crops (insightface detector, box files, centre)."""

import json

import numpy as np
import pytest

from headrecon.data.crop import (
    FaceBox,
    InsightFaceDetector,
    centre_box,
    crop_image,
    load_box_file,
    square_box,
)
from headrecon.data.media import MediaError, expand_inputs, iter_video, read_image
from headrecon.io.atomic import save_image
from tests.scrfd_fake import write_fake_scrfd


def test_expand_inputs_and_problems(tmp_path):
    save_image(tmp_path / "a.png", np.zeros((4, 4, 3)))
    (tmp_path / "d").mkdir()
    save_image(tmp_path / "d" / "b.jpg", np.zeros((4, 4, 3)))
    (tmp_path / "d" / "notes.txt").write_text("x")
    (tmp_path / "clip.mp4").write_bytes(b"")
    items, problems = expand_inputs([tmp_path / "a.png", tmp_path / "d", tmp_path / "clip.mp4",
                                     tmp_path / "missing.png", tmp_path / "d" / "notes.txt"])  # fmt: skip
    assert [(i.path.name, i.kind) for i in items] == [
        ("a.png", "image"),
        ("b.jpg", "image"),
        ("clip.mp4", "video"),
    ]
    assert [p.path.name for p in problems] == ["missing.png", "notes.txt"]


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(MediaError, match="corrupt.jpg"):
        read_image(bad)
    save_image(tmp_path / "grey.png", np.full((5, 6), 0.5))
    assert read_image(tmp_path / "grey.png").shape == (5, 6, 3)


def test_video_round_trip(tmp_path):
    import cv2

    path = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(6):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    frames = list(iter_video(path))
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    assert abs(int(frames[3].mean()) - 120) < 6
    assert len(list(iter_video(path, stride=2))) == 3
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage")
    with pytest.raises(MediaError, match="bad.mp4"):
        list(iter_video(bad))


def test_crop_geometry():
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:60, 50:90] = 255  # a 40x40 white square
    box = FaceBox(50, 20, 90, 60)
    crop = crop_image(img, box, size=40)
    assert crop.image.shape == (40, 40, 3) and crop.image.min() == 255  # exact pixel-for-pixel crop
    sq = square_box(box, scale=2.0)
    assert (sq.x1 - sq.x0, sq.centre) == (80, (70.0, 40.0))
    crop2 = crop_image(img, sq, size=80)
    assert crop2.image[20:60, 20:60].min() == 255 and crop2.image[:18].max() == 0
    # crop_to_image maps crop pixel centres to image pixel centres
    u = np.array([25.0, 30.0, 1.0])
    assert np.allclose(crop2.crop_to_image @ u, [30 + 25, 0 + 30])  # box corner (30, 0) + crop pixel
    c = centre_box(100, 200)
    assert (c.x0, c.y0, c.x1, c.y1) == (50, 0, 150, 100)


def test_box_files(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({"dir/img1.jpg": [1, 2, 3, 4]}))
    assert load_box_file(tmp_path / "b.json")["img1.jpg"].x1 == 3
    (tmp_path / "b.csv").write_text("# name,x0,y0,x1,y1\nimg2.png, 5, 6, 7, 8\n")
    assert load_box_file(tmp_path / "b.csv")["img2.png"].y1 == 8
    (tmp_path / "bad.csv").write_text("img3.png,1,2\n")
    with pytest.raises(ValueError, match="bad.csv.*line 1"):
        load_box_file(tmp_path / "bad.csv")


def test_insightface_detector_on_scrfd_format_model(tmp_path):
    model_dir = tmp_path / "buffalo_l"
    write_fake_scrfd(model_dir / "det_10g.onnx")
    det = InsightFaceDetector(model_dir)
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:260, 300:420] = 255  # the "face"
    faces = det.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.5
    np.testing.assert_allclose([f.x0, f.y0, f.x1, f.y1], [300, 100, 420, 260], atol=2.0)
    assert f.keypoints.shape == (5, 2)
    assert det.detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_detector_missing_file_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="det_10g.onnx.*insightface"):
        InsightFaceDetector(tmp_path)
