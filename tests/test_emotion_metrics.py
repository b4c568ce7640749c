"""Emotion metrics against hand computations on tiny examples."""

import math

import pytest
import torch

from headrecon.eval.emotion_metrics import EmotionMetrics, SignAgreement, emotion_metrics


def _hand_ccc(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / (n - 1)
    sx2 = sum((a - mx) ** 2 for a in x) / (n - 1)
    sy2 = sum((b - my) ** 2 for b in y) / (n - 1)
    return 2 * sxy / (sx2 + sy2 + (mx - my) ** 2)


def _hand_pcc(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def test_every_metric_against_a_hand_computation():
    # valence: preds / targets; arousal: preds / targets; 3 classes, 5 samples
    vp, vt = [0.5, -0.2, 0.0, 0.9, -0.4], [0.4, 0.1, -0.3, 0.8, -0.5]
    ap, at = [0.1, 0.2, 0.3, -0.1, 0.0], [0.2, 0.2, 0.1, 0.1, -0.2]
    target = [0, 1, 2, 2, 1]
    pred = [0, 2, 2, 2, 1]  # 4 of 5 right
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 3).float() * 3.0
    got = emotion_metrics(logits, torch.tensor(vp), torch.tensor(ap), torch.tensor(target), torch.tensor(vt),
                          torch.tensor(at))  # fmt: skip
    # CCC: e.g. valence by hand: means 0.16 / 0.10 ...
    assert got["valence_ccc"] == pytest.approx(_hand_ccc(vp, vt), abs=1e-5)
    assert got["arousal_ccc"] == pytest.approx(_hand_ccc(ap, at), abs=1e-5)
    assert got["valence_pcc"] == pytest.approx(_hand_pcc(vp, vt), abs=1e-5)
    assert got["arousal_pcc"] == pytest.approx(_hand_pcc(ap, at), abs=1e-5)
    # RMSE: valence squared errors .01 .09 .09 .01 .01 -> sqrt(.21 / 5)
    assert got["valence_rmse"] == pytest.approx(math.sqrt(0.21 / 5), abs=1e-6)
    assert got["arousal_rmse"] == pytest.approx(math.sqrt((0.01 + 0 + 0.04 + 0.04 + 0.04) / 5), abs=1e-6)
    # SAGR: valence signs (+,-,0,+,-) vs (+,+,-,+,-): 3 of 5; arousal (+,+,+,-,0) vs (+,+,+,+,-): 3 of 5
    assert got["valence_sagr"] == pytest.approx(3 / 5)
    assert got["arousal_sagr"] == pytest.approx(3 / 5)
    assert got["expression_accuracy"] == pytest.approx(4 / 5)
    # per-class F1: class 0 tp1 fp0 fn0 -> 1; class 1 tp1 fp0 fn1 -> 2/3; class 2 tp2 fp1 fn0 -> 4/5
    assert got["expression_f1_macro"] == pytest.approx((1 + 2 / 3 + 4 / 5) / 3, abs=1e-6)


def test_metrics_accumulate_over_batches_and_reset():
    g = torch.Generator().manual_seed(0)
    n, k = 40, 8
    logits, target = torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)
    v, a, vt, at = (torch.randn(n, generator=g) for _ in range(4))
    whole = emotion_metrics(logits, v, a, target, vt, at, num_classes=k)
    m = EmotionMetrics(k)
    for s in range(0, n, 16):
        m.update(logits[s : s + 16], v[s : s + 16], a[s : s + 16], target[s : s + 16], vt[s : s + 16],
                 at[s : s + 16])  # fmt: skip
    batched = {name: float(x) for name, x in m.compute().items()}
    assert set(batched) == set(EmotionMetrics.NAMES)
    for name in whole:
        assert batched[name] == pytest.approx(whole[name], abs=1e-5), name
    m.reset()
    sagr = SignAgreement()
    sagr.update(torch.tensor([1.0, -1.0]), torch.tensor([2.0, 3.0]))
    assert float(sagr.compute()) == 0.5
    with pytest.raises(ValueError):
        sagr.update(torch.zeros(2), torch.zeros(3))


def test_perfect_predictions():
    t = torch.tensor([0.3, -0.5, 0.8, -0.1])
    cls = torch.tensor([0, 1, 2, 3])
    got = emotion_metrics(torch.eye(4) * 5, t, t, cls, t, t)
    for d in ("valence", "arousal"):
        assert got[f"{d}_ccc"] == pytest.approx(1.0, abs=1e-6) and got[f"{d}_pcc"] == pytest.approx(
            1.0, abs=1e-6
        )
        assert got[f"{d}_rmse"] == pytest.approx(0.0, abs=1e-6) and got[f"{d}_sagr"] == 1.0
    assert got["expression_accuracy"] == 1.0 and got["expression_f1_macro"] == 1.0
