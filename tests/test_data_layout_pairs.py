"""Clip layout index / validation and pair sampling."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from headrecon.data.layout import LayoutError, index_root, index_roots, natural_key
from headrecon.data.pairs import PairSampler, match_subjects, split_subjects
from tests.data_trees import write_clip, write_tree


def test_index_valid_tree(tmp_path):
    write_tree(tmp_path, {"vfhq": 2, "nersemble": 1}, clips=2, frames=3, bboxes=True, masks=True)
    idx = index_root(tmp_path)
    assert idx.problems == []
    assert len(idx.clips) == 6 and idx.num_frames == 18
    assert idx.datasets() == ["nersemble", "vfhq"]
    assert sorted(idx.subjects()) == ["nersemble/p0", "vfhq/p0", "vfhq/p1"]
    c = idx.clips[0]
    assert c.has_landmarks and c.has_bboxes and not c.has_gt
    assert c.frames == ("0000.png", "0001.png", "0002.png")
    assert c.mask_path(1).name == "0001.png" and c.frame_path(2).is_file()
    assert c.meta["crop_size"] == 16
    # dataset -> root mapping: ROOT holding <dataset>/ or the dataset folder itself
    assert len(index_roots({"vfhq": tmp_path}).clips) == 4
    assert len(index_roots({"vfhq": [tmp_path / "vfhq"]}).clips) == 4


def test_natural_sort():
    names = ["f10.png", "f2.png", "f1.png"]
    assert sorted(names, key=natural_key) == ["f1.png", "f2.png", "f10.png"]


def test_index_reports_problems_with_file_names(tmp_path):
    ds = tmp_path / "vfhq"
    write_clip(ds / "good" / "c0")
    write_clip(ds / "a" / "bad_lmk", frames=3)
    np.save(ds / "a" / "bad_lmk" / "landmarks.npy", np.zeros((2, 68, 2), np.float32))  # T mismatch
    (ds / "a" / "empty" / "frames").mkdir(parents=True)
    (ds / "a" / "empty" / "meta.json").write_text("{}")
    write_clip(ds / "a" / "nometa")
    (ds / "a" / "nometa" / "meta.json").unlink()
    write_clip(ds / "a" / "badmeta")
    (ds / "a" / "badmeta" / "meta.json").write_text("{not json")
    write_clip(ds / "a" / "count", meta={"frame_count": 7})
    write_clip(ds / "a" / "extra")
    (ds / "a" / "extra" / "notes.txt").write_text("x")
    (ds / "a" / "extra" / "frames" / "x.txt").write_text("x")
    (ds / "a" / "noframes").mkdir()

    idx = index_root(tmp_path)
    msgs = {(p.path.relative_to(ds).as_posix(), p.fatal): p.message for p in idx.problems}
    text = "\n".join(str(p) for p in idx.problems)
    assert ("a/bad_lmk/landmarks.npy", True) in msgs and "3 frames" in msgs[("a/bad_lmk/landmarks.npy", True)]
    assert ("a/empty/frames", True) in msgs and "empty clip" in text
    assert ("a/nometa/meta.json", True) in msgs
    assert ("a/badmeta/meta.json", True) in msgs
    assert ("a/count/meta.json", True) in msgs
    assert ("a/extra/notes.txt", False) in msgs and ("a/extra/frames/x.txt", False) in msgs
    assert ("a/noframes/frames", True) in msgs
    # only the valid clips are indexed (a warning does not drop a clip)
    assert sorted(c.clip_key for c in idx.clips) == ["vfhq/a/extra", "vfhq/good/c0"]


def test_empty_root_raises_listing_problems(tmp_path):
    (tmp_path / "vfhq" / "p0" / "c0" / "frames").mkdir(parents=True)
    idx = index_root(tmp_path)
    with pytest.raises(LayoutError, match="empty clip"):
        idx.raise_if_empty("test")


def test_gt_keys_checked(tmp_path):
    clip = write_clip(tmp_path / "synthetic" / "s0" / "c0")
    (clip / "gt").mkdir()
    np.savez(clip / "gt" / "flame.npz", shape=np.zeros((3, 300)))
    idx = index_root(tmp_path)
    assert not idx.clips and "missing arrays" in str(idx.problems[0])


def _clips(tmp_path, datasets, clips=2, frames=3):
    write_tree(tmp_path, datasets, clips=clips, frames=frames, landmarks=False)
    return index_root(tmp_path).clips


def test_pairs_same_subject_and_deterministic(tmp_path):
    clips = _clips(tmp_path, {"a": 3, "b": 2})
    for same_clip in (False, True):
        s1 = PairSampler(clips, same_clip=same_clip, seed=5)
        s2 = PairSampler(clips, same_clip=same_clip, seed=5)
        s3 = PairSampler(clips, same_clip=same_clip, seed=6)
        p1 = [s1.pair(0, i) for i in range(200)]
        assert p1 == [s2.pair(0, i) for i in range(200)]
        assert p1 != [s3.pair(0, i) for i in range(200)]
        assert p1 != [s1.pair(1, i) for i in range(200)]  # a new epoch draws new pairs
        cross = 0
        for src, tgt in p1:
            a, b = clips[src.clip], clips[tgt.clip]
            assert a.subject_key == b.subject_key
            assert (src.clip, src.frame) != (tgt.clip, tgt.frame)
            assert 0 <= src.frame < a.num_frames and 0 <= tgt.frame < b.num_frames
            cross += src.clip != tgt.clip
        assert (cross == 0) if same_clip else (cross > 0)


def test_mix_weights_respected(tmp_path):
    clips = _clips(tmp_path, {"nersemble": 1, "vfhq": 5}, clips=1)
    s = PairSampler(clips, {"nersemble": 0.8, "vfhq": 0.2}, seed=0)
    n = 2000
    counts = Counter(clips[s.pair(0, i).source.clip].dataset for i in range(n))
    assert abs(counts["nersemble"] / n - 0.8) < 0.04
    # subjects inside a dataset are drawn uniformly
    subj = Counter(
        clips[s.pair(0, i).source.clip].subject
        for i in range(n)
        if clips[s.pair(0, i).source.clip].dataset == "vfhq"
    )
    assert min(subj.values()) > 0.5 * max(subj.values())
    with pytest.raises(ValueError, match="no usable subject"):
        PairSampler(clips, {"nersemble": 1.0, "missing": 1.0})
    only = PairSampler(clips, {"vfhq": 1.0})  # a dataset absent from the mix is never drawn
    assert all(clips[only.pair(0, i).source.clip].dataset == "vfhq" for i in range(100))


def test_subjects_without_pairs_are_dropped(tmp_path):
    write_clip(tmp_path / "d" / "one" / "c0", frames=1, landmarks=False)
    write_clip(tmp_path / "d" / "one" / "c1", frames=1, landmarks=False)
    write_clip(tmp_path / "d" / "two" / "c0", frames=2, landmarks=False)
    clips = index_root(tmp_path).clips
    assert PairSampler(clips, same_clip=False).num_subjects == 2  # 'one' pairs across its clips
    s = PairSampler(clips, same_clip=True)
    assert s.dropped == ["d/one"] and s.num_subjects == 1


def test_eval_subjects_split_and_unknown_names(tmp_path):
    clips = _clips(tmp_path, {"vfhq": 3, "nersemble": 2})
    train, evals = split_subjects(clips, ["vfhq/p1", "p0"])  # a bare name matches in every dataset
    held = {c.subject_key for c in evals}
    assert held == {"vfhq/p1", "vfhq/p0", "nersemble/p0"}
    assert not held & {c.subject_key for c in train}
    with pytest.raises(ValueError, match=r"'vfhq/p9'.*close matches: vfhq/p"):
        match_subjects(["vfhq/p9"], clips)
    with pytest.raises(ValueError, match="unknown evaluation subject"):
        split_subjects(clips, ["nobody"])


def test_meta_json_keys_roundtrip(tmp_path):
    clip = write_clip(tmp_path / "d" / "s" / "c", meta={"camera": "cam_220700191", "box_source": "detector"})
    info = index_root(tmp_path).clips[0]
    assert info.meta == json.loads((clip / "meta.json").read_text())
