"""VFHQ and Nersemble preprocessors on tiny fake trees in the datasets' layouts."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from headrecon.data.check import check_root
from headrecon.data.cli import add_data_commands
from headrecon.data.layout import index_root
from headrecon.data.preprocess import (
    PreprocessOptions,
    parse_vfhq_annotation,
    preprocess_nersemble,
    preprocess_vfhq,
    vfhq_names,
)
from tests.scrfd_fake import write_fake_scrfd

S = 24


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _face_image(w: int, h: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Dark image with a bright 'face' filling `box` (x0, y0, x1, y1)."""
    img = np.full((h, w, 3), 30, np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 240
    return img


def _landmarks68(box) -> np.ndarray:
    x0, y0, x1, y1 = box
    lm = np.zeros((68, 2))
    lm[:, 0] = np.linspace(x0, x1, 68)
    lm[:, 1] = np.linspace(y0, y1, 68)
    return lm


def _write_vfhq(src):
    # clip 1: frames stored cropped to CROP_BBOX (offset 20, 10) of an 80x60 video; rows: box + 68 landmarks
    name1 = "Clip+abc123+P0+C1+F100-104"
    (src / name1).mkdir(parents=True)
    lines = [
        "Video ID: abc123",
        "H: 60",
        "W: 80",
        "FPS: 25.00",
        "CROP_BBOX: 20 10 60 50",
        "FRAME INDEX BOX LANDMARKS",
    ]
    for t in range(4):
        box_frame = (10 + t, 12, 26 + t, 28)  # in frame pixels
        Image.fromarray(_face_image(40, 40, box_frame)).save(src / name1 / f"{t:08d}.png")
        box_video = np.array(box_frame, float) + [20, 10, 20, 10]
        lm = _landmarks68(box_video)
        lines.append(f"{t:08d} " + " ".join(f"{v:.2f}" for v in [*box_video, *lm.ravel()]))
    (src / f"{name1}.txt").write_text("\n".join(lines) + "\n")
    # clip 2: full-size frames, box-only rows, annotation inside the clip folder, one frame without a row
    name2 = "Clip+abc123+P0+C2+F200-203"
    (src / name2).mkdir()
    rows = ["H: 48", "W: 64", "FPS: 30", "CROP_BBOX: 0 0 64 48"]
    for t in range(3):
        Image.fromarray(_face_image(64, 48, (20, 10, 36, 26))).save(src / name2 / f"{t:08d}.jpg")
        if t < 2:
            rows.append(f"{t:08d} 20 10 36 26")
    (src / name2 / f"{name2}.txt").write_text("\n".join(rows) + "\n")
    # clip 3: no annotation at all
    (src / "Clip+zzz+P1+C0+F0-3").mkdir()
    Image.fromarray(_face_image(32, 32, (8, 8, 24, 24))).save(src / "Clip+zzz+P1+C0+F0-3" / "0.png")
    return name1, name2


def test_vfhq_names_and_annotation(tmp_path):
    assert vfhq_names("Clip+abc123+P0+C1+F100-104") == ("abc123+P0", "C1+F100-104")
    assert vfhq_names("my clip") == ("my_clip", "clip")
    p = tmp_path / "a.txt"
    p.write_text("H: 10\nW: 20\nFRAME\n0 1 2 3 4\n1 " + " ".join(["1"] * 10) + "\n")
    ann = parse_vfhq_annotation(p)
    assert ann.video_size == (20, 10) and ann.landmarks[0] is None and ann.landmarks[1].shape == (5, 2)
    np.testing.assert_allclose(ann.boxes[0], [1, 2, 3, 4])
    p.write_text("0 1 2 3\n")
    with pytest.raises(ValueError, match=r"a.txt:1: 3 numbers"):
        parse_vfhq_annotation(p)


def test_vfhq_to_clip_layout(tmp_path):
    src, out = tmp_path / "vfhq_src", tmp_path / "root"
    name1, name2 = _write_vfhq(src)
    opts = PreprocessOptions(size=S, crop_scale=1.5, smooth=1, image_format="png")
    report = preprocess_vfhq(src, out, opts=opts)
    assert report.clips == 2 and report.frames == 4 + 2
    assert any("Clip+zzz" in p and "no annotation" in p for p in report.problems)
    assert any(name2 in p and "without an annotation row" in p for p in report.problems)
    idx = index_root(out)
    assert idx.problems == []
    assert sorted(c.clip_key for c in idx.clips) == [
        "vfhq/abc123+P0/C1+F100-104",
        "vfhq/abc123+P0/C2+F200-203",
    ]
    c1 = next(c for c in idx.clips if c.clip == "C1+F100-104")
    assert (
        c1.has_landmarks and c1.has_bboxes and c1.meta["box_source"] == "dataset" and c1.meta["fps"] == 25.0
    )
    # the 16 px face box is centred in the crop and spans S / 1.5 pixels
    boxes = np.load(c1.bboxes_path)
    np.testing.assert_allclose(boxes, np.tile([S / 6, S / 6, 5 * S / 6, 5 * S / 6], (4, 1)), atol=1e-4)
    lm = np.load(c1.landmarks_path)
    np.testing.assert_allclose(lm[:, 0], np.tile([S / 6, S / 6], (4, 1)), atol=1e-4)
    np.testing.assert_allclose(lm[:, -1], np.tile([5 * S / 6, 5 * S / 6], (4, 1)), atol=1e-4)
    frame = np.asarray(Image.open(c1.frame_path(2)))
    assert (
        frame[S // 2, S // 2].min() > 200 and frame[1, 1].max() < 60
    )  # face in the middle, background around
    c2 = next(c for c in idx.clips if c.clip == "C2+F200-203")
    assert c2.num_frames == 2 and not c2.has_landmarks and c2.meta["fps"] == 30.0
    assert check_root(out).ok
    # a second run skips completed clips
    again = preprocess_vfhq(src, out, opts=opts)
    assert again.clips == 0 and again.already_done == 2


def _write_nersemble(src):
    # release layout: <subject>/sequences/<seq>/timesteps/frame_<t>/images-2x/cam_<id>.jpg
    for t in range(3):
        d = src / "017" / "sequences" / "EMO-1" / "timesteps" / f"frame_{t * 3:05d}" / "images-2x"
        d.mkdir(parents=True)
        for cam, x in (("cam_222200037", 10), ("cam_222200038", 30)):
            Image.fromarray(_face_image(64, 48, (x + t, 12, x + t + 20, 32))).save(d / f"{cam}.png")
    # a video per camera
    import cv2

    vdir = src / "018" / "EXP-2"
    vdir.mkdir(parents=True)
    writer = cv2.VideoWriter(str(vdir / "cam_1.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(4):
        writer.write(_face_image(64, 48, (20, 10, 40, 30))[:, :, ::-1].copy())
    writer.release()


def test_nersemble_with_insightface_detector(tmp_path):
    src, out = tmp_path / "ner", tmp_path / "root"
    _write_nersemble(src)
    det_dir = tmp_path / "buffalo_l"
    write_fake_scrfd(det_dir / "det_10g.onnx")
    argv = ["data", "preprocess", "nersemble", "--src", str(src), "--out", str(out), "--detector", str(det_dir),
            "--size", str(S), "--smooth", "1", "--format", "png"]  # fmt: skip
    assert _cli(argv) == 0
    idx = index_root(out)
    assert idx.problems == []
    keys = sorted(c.clip_key for c in idx.clips)
    assert keys == [
        "nersemble/017/EMO-1__cam_222200037",
        "nersemble/017/EMO-1__cam_222200038",
        "nersemble/018/EXP-2__cam_1",
    ]
    for c in idx.clips:
        assert c.meta["box_source"] == "detector" and c.meta["camera"] == c.clip.split("__")[1]
        boxes = np.load(c.bboxes_path)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        np.testing.assert_allclose(centre, S / 2, atol=1.0)  # the detected face is centred in every crop
        frame = np.asarray(Image.open(c.frame_path(0)))
        assert frame.shape == (S, S, 3) and frame[S // 2, S // 2].min() > 200
    video_clip = next(c for c in idx.clips if c.subject == "018")
    assert video_clip.num_frames == 4 and video_clip.meta["fps"] == pytest.approx(10.0)
    assert check_root(out).ok


def test_nersemble_needs_detector_or_centre_crop(tmp_path):
    src = tmp_path / "ner"
    _write_nersemble(src)
    with pytest.raises(ValueError, match="--centre-crop"):
        preprocess_nersemble(src, tmp_path / "out")
    report = preprocess_nersemble(src, tmp_path / "out", centre_crop=True, cameras=["cam_222200037"],
                                  opts=PreprocessOptions(size=S, stride=2))  # fmt: skip
    assert report.clips == 1 and report.frames == 2
    (clip,) = index_root(tmp_path / "out").clips
    assert clip.meta["box_source"] == "centre" and clip.frames == ("00000.jpg", "00001.jpg")
    assert json.loads((clip.path / "meta.json").read_text())["crop_boxes"][0] == [8.0, 0.0, 56.0, 48.0]
