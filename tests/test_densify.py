"""Canonical Gaussian set and the densify/prune rules, with planted statistics."""

import torch

from headrecon.gaussians.canonical import CanonicalGaussians, initial_barycentrics
from headrecon.gaussians.densify import (
    DensifyStatistics,
    apply_edits,
    choose_edits,
    remap_optimizer_state,
)


def test_initial_barycentrics_valid_and_distinct():
    for k in range(1, 7):
        b = initial_barycentrics(k)
        assert b.shape == (k, 3)
        torch.testing.assert_close(b.sum(1), torch.ones(k, dtype=torch.float64))
        assert (b > 0).all()
        assert torch.unique(b, dim=0).shape[0] == k


def test_canonical_uv_and_counts():
    c = CanonicalGaussians(num_faces=4, per_face=2, embed_dim=8)
    assert len(c) == 8 and c.per_face_counts().tolist() == [2, 2, 2, 2]
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    uv_faces = torch.tensor([[0, 1, 2], [1, 3, 2], [0, 1, 3], [0, 3, 2]])
    uv = c.uv(uvs, uv_faces)
    expected = (uvs[uv_faces[c.face_ids]] * c.bary[:, :, None]).sum(1)
    torch.testing.assert_close(uv, expected)


def _planted(n_faces=5, per_face=2):
    c = CanonicalGaussians(num_faces=n_faces, per_face=per_face, embed_dim=4)
    s = DensifyStatistics(len(c), t_history=4)
    return c, s


def test_prune_lowest_opacity_and_duplicate_highest_gradient():
    c, s = _planted()
    op = torch.full((10,), 0.8)
    op[7] = 0.05  # the least opaque
    gr = torch.zeros(10)
    gr[2] = 5.0  # the largest gradient
    s.push(op, gr)
    d = choose_edits(
        s.mean_opacity(),
        s.mean_grad(),
        s.observations(),
        c.face_ids,
        c.uids,
        c.num_faces,
        n_prune=1,
        n_densify=1,
    )
    assert d.prune.tolist() == [7] and d.densify.tolist() == [2]
    emb_parent = c.embeddings.data[2].clone()
    src = apply_edits(c, s, d, generator=torch.Generator().manual_seed(0), embedding_noise=0.0)
    assert len(c) == 10
    assert src.tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9, -1]
    assert 7 not in c.uids.tolist() and c.uids[-1].item() == 10 and c.next_uid.item() == 11
    assert c.face_ids[-1] == c.face_ids[2] == 1
    torch.testing.assert_close(c.embeddings.data[-1], emb_parent)
    assert not torch.equal(c.bary[-1], c.bary[2])  # jittered
    torch.testing.assert_close(c.bary.sum(1), torch.ones(10))
    # statistics follow: the new Gaussian has none; survivors keep theirs
    assert s.observations().tolist() == [1] * 9 + [0]
    assert s.mean_grad()[2] == 5.0


def test_per_face_bounds_hold():
    c, s = _planted(n_faces=3, per_face=1)  # every face at the minimum
    s.push(torch.tensor([0.0, 0.1, 0.2]), torch.tensor([1.0, 0.0, 0.0]))
    d = choose_edits(
        s.mean_opacity(),
        s.mean_grad(),
        s.observations(),
        c.face_ids,
        c.uids,
        c.num_faces,
        n_prune=2,
        n_densify=0,
    )
    assert d.prune.numel() == 0  # would empty a face
    # fill face 0 to the maximum: no more duplication there; the next best face is chosen instead
    c2 = CanonicalGaussians(num_faces=2, per_face=6, embed_dim=2)
    s2 = DensifyStatistics(len(c2), 2)
    g = torch.zeros(12)
    g[:6] = 10.0
    g[6] = 1.0
    s2.push(torch.ones(12), g)
    d2 = choose_edits(
        s2.mean_opacity(), s2.mean_grad(), s2.observations(), c2.face_ids, c2.uids, 2, n_prune=0, n_densify=1
    )
    assert d2.densify.tolist() == []  # both faces full
    d3 = choose_edits(
        s2.mean_opacity(), s2.mean_grad(), s2.observations(), c2.face_ids, c2.uids, 2, n_prune=1, n_densify=1
    )
    # pruning the least opaque (ties -> lowest uid: row 0 on face 0) frees a slot on face 0 for the top gradient
    assert d3.prune.tolist() == [0] and d3.densify.tolist() == [1]


def test_many_rounds_keep_total_and_bounds():
    c, s = _planted(n_faces=6, per_face=2)
    g = torch.Generator().manual_seed(3)
    for step in range(60):
        s.push(torch.rand(len(c), generator=g), torch.rand(len(c), generator=g))
        d = choose_edits(
            s.mean_opacity(),
            s.mean_grad(),
            s.observations(),
            c.face_ids,
            c.uids,
            c.num_faces,
            n_prune=2,
            n_densify=2,
        )
        apply_edits(c, s, d, generator=torch.Generator().manual_seed(step))
        counts = c.per_face_counts()
        assert counts.min() >= 1 and counts.max() <= 6
        assert len(c) == 12  # same number pruned and duplicated while bounds allow
        assert len(s) == len(c)
        assert torch.unique(c.uids).numel() == len(c)


def test_new_gaussians_are_not_judged_without_statistics():
    c, s = _planted()
    s.push(torch.ones(10), torch.zeros(10))
    d = choose_edits(
        s.mean_opacity(),
        s.mean_grad(),
        s.observations(),
        c.face_ids,
        c.uids,
        c.num_faces,
        n_prune=0,
        n_densify=1,
    )
    apply_edits(c, s, d, generator=torch.Generator().manual_seed(0))
    # the newcomer has opacity 0 and a huge gradient by default accounting, but no observations yet
    d2 = choose_edits(
        s.mean_opacity(),
        s.mean_grad(),
        s.observations(),
        c.face_ids,
        c.uids,
        c.num_faces,
        n_prune=1,
        n_densify=1,
    )
    assert 10 not in d2.prune.tolist() and 10 not in d2.densify.tolist()


def test_window_covers_last_t_history_steps():
    s = DensifyStatistics(1, t_history=3)
    for v in [10.0, 1.0, 2.0, 3.0]:
        s.push(torch.tensor([v]), torch.tensor([v]))
    assert s.mean_opacity().item() == 2.0  # the 10 fell out of the window
    assert s.observations().item() == 3


def test_optimizer_rows_follow_their_gaussians():
    c, s = _planted()
    opt = torch.optim.Adam(c.parameters(), lr=0.1)
    c.embeddings.grad = torch.arange(40.0).reshape(10, 4)
    opt.step()
    before = opt.state[c.embeddings]["exp_avg"].clone()
    s.push(torch.linspace(0.1, 1, 10), torch.linspace(0, 1, 10))  # prune row 0, duplicate row 9
    d = choose_edits(s.mean_opacity(), s.mean_grad(), s.observations(), c.face_ids, c.uids, c.num_faces)
    old = c.embeddings
    src = apply_edits(c, s, d, generator=torch.Generator().manual_seed(0))
    assert c.embeddings is not old
    remap_optimizer_state(opt, old, c.embeddings, src)
    assert opt.param_groups[0]["params"][0] is c.embeddings and old not in opt.state
    after = opt.state[c.embeddings]["exp_avg"]
    assert after.shape == (10, 4)
    torch.testing.assert_close(after[:9], before[1:])
    assert (after[9] == 0).all()
    assert (opt.state[c.embeddings]["exp_avg_sq"][9] == 0).all()
    c.embeddings.grad = torch.ones(10, 4)
    opt.step()  # the optimiser keeps working on the edited parameter


def test_state_dict_round_trip_resizes_before_loading():
    c, s = _planted()
    s.push(torch.rand(10), torch.rand(10))
    d = choose_edits(
        s.mean_opacity(),
        s.mean_grad(),
        s.observations(),
        c.face_ids,
        c.uids,
        c.num_faces,
        n_prune=3,
        n_densify=1,
    )
    apply_edits(c, s, d, generator=torch.Generator().manual_seed(0))
    assert len(c) == 8
    fresh, fresh_s = _planted()
    fresh.load_state_dict(c.state_dict())
    fresh_s.load_state_dict(s.state_dict())
    for name in ("face_ids", "bary", "uids", "next_uid", "embeddings"):
        torch.testing.assert_close(getattr(fresh, name), getattr(c, name))
    torch.testing.assert_close(fresh_s.opacity, s.opacity)
    assert torch.equal(fresh_s.valid, s.valid) and fresh_s.cursor == s.cursor


def test_densify_signal_sums_over_the_batch():
    from headrecon.gaussians.densify import densify_signal

    op = torch.tensor([[0.1, 0.5], [0.3, 0.5]])
    grad = torch.tensor([[[3.0, 4.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]]])
    o, g = densify_signal(op, grad)
    torch.testing.assert_close(o, torch.tensor([0.4, 1.0]))
    torch.testing.assert_close(g, torch.tensor([6.0, 2.0]))
    assert densify_signal(op, None)[1].eq(0).all()
