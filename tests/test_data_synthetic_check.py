"""Synthetic clip writer (determinism, ground truth reproduces the frames) and `data check`."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from headrecon.data.check import check_root
from headrecon.data.cli import add_data_commands
from headrecon.data.datamodule import HeadDataModule
from headrecon.data.layout import GT_FLAME_KEYS, index_root
from headrecon.data.media import read_image
from headrecon.data.synthetic import SyntheticOptions, render_clip, write_synthetic_dataset
from tests.data_trees import write_clip, write_tree

SIZE = 32


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory, procedural_flame_dir):
    out = tmp_path_factory.mktemp("synthetic")
    argv = ["data", "synthetic", "--out", str(out), "--flame", str(procedural_flame_dir), "--subjects", "2",
            "--clips", "1", "--frames", "2", "--size", str(SIZE), "--texture-size", "32", "--seed", "7"]  # fmt: skip
    assert _cli(argv) == 0
    return out


def test_synthetic_layout_and_determinism(synthetic_root, procedural_flame_dir, tmp_path):
    idx = index_root(synthetic_root)
    assert idx.problems == [] and idx.datasets() == ["synthetic"]
    assert sorted(c.clip_key for c in idx.clips) == ["synthetic/s0000/c00", "synthetic/s0001/c00"]
    clip = idx.clips[0]
    assert clip.has_gt and clip.has_landmarks and clip.has_bboxes and clip.masks is not None
    assert clip.meta["crop_size"] == SIZE and clip.meta["frame_count"] == 2
    assert check_root(synthetic_root).ok
    # same seed -> identical files; another seed -> different heads
    opts = SyntheticOptions(subjects=1, clips=1, frames=2, size=SIZE, texture_size=32, seed=7)
    write_synthetic_dataset(tmp_path / "a", procedural_flame_dir, opts)
    clip_a = tmp_path / "a" / "synthetic" / "s0000" / "c00"
    for f in ["frames/00000.png", "frames/00001.png", "masks/00001.png", "landmarks.npy", "gt/texture.png"]:
        assert (clip_a / f).read_bytes() == (clip.path / f).read_bytes(), f
    with np.load(clip_a / "gt" / "flame.npz") as a, np.load(clip.gt_path) as b:
        for k in GT_FLAME_KEYS:
            np.testing.assert_array_equal(a[k], b[k])
    opts.seed = 8
    write_synthetic_dataset(tmp_path / "b", procedural_flame_dir, opts)
    other = tmp_path / "b" / "synthetic" / "s0000" / "c00" / "frames" / "00000.png"
    assert other.read_bytes() != (clip.path / "frames" / "00000.png").read_bytes()


def test_synthetic_ground_truth_reproduces_frames(synthetic_root, procedural_flame_dir):
    from headrecon.flame import FlameModel

    model = FlameModel.from_path(procedural_flame_dir)
    for clip in index_root(synthetic_root).clips:
        with np.load(clip.gt_path) as z:
            gt = {k: z[k] for k in z.files}
        assert gt["shape"].shape == (2, 300) and gt["expression"].shape == (2, 100)
        assert gt["sh_coeffs"].shape == (2, 9, 3)
        assert np.ptp(gt["shape"], axis=0).max() == 0  # one identity per subject
        texture = read_image(clip.path / "gt" / "texture.png").transpose(2, 0, 1) / 255.0
        r = render_clip(model, gt, texture, int(gt["image_size"]))
        lmk = np.load(clip.landmarks_path)
        np.testing.assert_allclose(lmk, r.landmarks.numpy(), atol=1e-4)
        for t in range(2):
            frame = read_image(clip.frame_path(t)) / 255.0
            assert np.abs(frame - r.rgb[t].numpy()).max() <= 0.5 / 255 + 1e-6
            mask = np.asarray(Image.open(clip.mask_path(t))) > 127
            assert (mask == (r.alpha[t].numpy() > 0.5)).all() and 0.1 < mask.mean() < 0.95
            # landmarks lie on the head; the box spans them
            inside = [mask[int(y), int(x)] for x, y in lmk[t] if 0 <= x < SIZE and 0 <= y < SIZE]
            assert np.mean(inside) > 0.9
        boxes = np.load(clip.bboxes_path)
        np.testing.assert_allclose(boxes[:, :2], lmk.min(axis=1), atol=1e-5)


def test_datamodule_on_synthetic(synthetic_root):
    dm = HeadDataModule(roots={"synthetic": synthetic_root}, eval_subjects=["s0001"], image_size=16,
                        batch_size=2, num_workers=0, pairs_per_epoch=2, val_pairs=2)  # fmt: skip
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["source"].shape == (2, 3, 16, 16) and b["target_mask"].min() == 0
    assert b["target_flame"]["shape"].shape == (2, 300) and b["target_lighting"].shape == (2, 9, 3)
    assert set(b["subject"]) == {"s0000"}
    # landmarks in crop pixels: halved from 32 px frames to 16 px
    clip = next(c for c in index_root(synthetic_root).clips if c.subject == "s0000")
    t = clip.frames.index(b["target_frame"][0])
    np.testing.assert_allclose(
        b["target_landmarks"][0].numpy(), np.load(clip.landmarks_path)[t] / 2, rtol=1e-5
    )


def test_check_clean_tree_exit_0(tmp_path, capsys):
    write_tree(tmp_path, {"vfhq": 2}, clips=1, frames=2, size=8, masks=True, bboxes=True)
    assert _cli(["data", "check", str(tmp_path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_reports_planted_problems(tmp_path, capsys):
    ds = tmp_path / "vfhq"
    write_tree(tmp_path, {"vfhq": 1}, clips=1, frames=2, size=8)  # one clean clip
    corrupt = write_clip(ds / "p1" / "corrupt", frames=3, size=8)
    (corrupt / "frames" / "0001.png").write_bytes(b"not a png")
    mism = write_clip(ds / "p1" / "lmk", frames=3, size=8)
    np.save(mism / "landmarks.npy", np.zeros((5, 68, 2), np.float32))
    (ds / "p1" / "empty" / "frames").mkdir(parents=True)
    (ds / "p1" / "empty" / "meta.json").write_text(json.dumps({}))
    extra = write_clip(ds / "p2" / "extra", frames=2, size=8, masks=True)
    (extra / "README.txt").write_text("x")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(extra / "masks" / "0000.png")  # wrong size
    sizes = write_clip(ds / "p2" / "sizes", frames=2, size=8, meta={"crop_size": 10})
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(sizes / "frames" / "0001.png")
    gt = write_clip(ds / "p2" / "gt", frames=2, size=8)
    (gt / "gt").mkdir()
    np.savez(gt / "gt" / "flame.npz", **{k: np.zeros((3, 2), np.float32) for k in GT_FLAME_KEYS})
    nometa = write_clip(ds / "p3" / "nometa", frames=2, size=8)
    (nometa / "meta.json").unlink()

    report = check_root(tmp_path)
    assert not report.ok and report.unreadable == 1
    text = "\n".join(str(p) for p in report.problems)
    expected = [
        (corrupt / "frames" / "0001.png", "unreadable frame"),
        (mism / "landmarks.npy", "does not match 3 frames"),
        (ds / "p1" / "empty" / "frames", "empty clip"),
        (extra / "README.txt", "unexpected file"),
        (extra / "masks" / "0000.png", "mask is 4x4 but its frame is 8x8"),
        (sizes / "frames", "frames of different sizes"),
        (sizes / "frames" / "0000.png", "crop_size 10"),
        (gt / "gt" / "flame.npz", "expected [2, D]"),
        (nometa / "meta.json", "missing meta.json"),
    ]
    for path, msg in expected:
        assert any(p.path == path and msg in p.message for p in report.problems), (path, msg, text)
    assert _cli(["data", "check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "PROBLEMS" in out and str(corrupt / "frames" / "0001.png") in err


def test_check_missing_root(tmp_path):
    assert _cli(["data", "check", str(tmp_path / "nope")]) == 1
