"""SubmoduleEMA: the average it keeps, what validation and the end of training see, checkpoints and resume."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from headrecon.callbacks.ema import SubmoduleEMA, ema_decay


class Toy(pl.LightningModule):
    """A linear 'estimator' with a BatchNorm (float and integer buffers) and a second module left alone."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.estimator = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
        self.other = nn.Linear(3, 1)
        self.trace: list[dict[str, torch.Tensor]] = []  # estimator state after every optimiser step
        self.val_weights: list[torch.Tensor] = []

    def training_step(self, batch, _):
        x, y = batch
        return (self.other(self.estimator(x)).squeeze(-1) - y).square().mean()

    def on_train_batch_end(self, *_):
        self.trace.append({k: v.detach().clone() for k, v in self.estimator.state_dict().items()})

    def validation_step(self, batch, _):
        self.val_weights.append(self.estimator[0].weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(n: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(-1)), batch_size=4)


def _trainer(tmp_path, callbacks, max_steps, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks, **kw,
    )  # fmt: skip


def _expected(trace, initial, decay, start_step=0):
    """The average recomputed from the recorded states (independent of the callback's code)."""
    avg = {k: v.clone() for k, v in initial.items()}
    n = 0
    for step, state in enumerate(trace, start=1):
        for k, v in state.items():
            if step < start_step or not v.is_floating_point():
                avg[k] = v.clone()
            else:
                d = min(decay, (1 + n) / (10 + n))
                avg[k] = d * avg[k] + (1 - d) * v
        n += step >= start_step
    return avg


def test_decay_warm_up():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)
    assert ema_decay(0.999, 10) == pytest.approx(11 / 20)
    assert ema_decay(0.9, 1000) == 0.9
    with pytest.raises(ValueError, match="decay"):
        SubmoduleEMA(decay=1.0)


@pytest.mark.parametrize("start_step", [0, 3])
def test_average_matches_an_independent_recomputation(tmp_path, start_step):
    model = Toy()
    initial = {k: v.clone() for k, v in model.estimator.state_dict().items()}
    ema = SubmoduleEMA(decay=0.9, start_step=start_step, apply_at_end=False)
    _trainer(tmp_path, [ema], max_steps=8).fit(model, _loader())
    expected = _expected(model.trace, initial, 0.9, start_step)
    for k, v in expected.items():
        torch.testing.assert_close(ema.shadow[k], v, msg=k)
    assert ema.shadow["1.num_batches_tracked"] == 8
    # apply_at_end=False: the module keeps its live weights, which differ from the average
    torch.testing.assert_close(model.estimator[0].weight, model.trace[-1]["0.weight"])
    assert not torch.allclose(model.estimator[0].weight, ema.shadow["0.weight"])


def test_validation_sees_the_average_and_training_resumes_live(tmp_path):
    model = Toy()
    ema = SubmoduleEMA(decay=0.9)
    trainer = _trainer(tmp_path, [ema], max_steps=8, val_check_interval=4, num_sanity_val_steps=0)
    trainer.fit(model, _loader(), _loader())
    initial = Toy().estimator.state_dict()
    avg4 = _expected(model.trace[:4], initial, 0.9)
    torch.testing.assert_close(model.val_weights[0], avg4["0.weight"])
    # the step after validation started from the live weights, not the average: replay it without the callback
    replay = Toy()
    _trainer(tmp_path / "replay", [], max_steps=8).fit(replay, _loader())
    for a, b in zip(model.trace, replay.trace):
        torch.testing.assert_close(a["0.weight"], b["0.weight"])
    # apply_at_end: after fit the estimator holds the average over all 8 steps; `other` is untouched
    torch.testing.assert_close(model.estimator[0].weight, _expected(model.trace, initial, 0.9)["0.weight"])
    torch.testing.assert_close(model.other.weight, replay.other.weight)


def test_checkpoint_holds_live_weights_and_the_average_and_resume_continues(tmp_path):
    """A ModelCheckpoint file written during training (at an epoch boundary, 4 batches an epoch) keeps the live
    weights in state_dict and the average in state_dict_ema; resuming from it ends where the full run ends."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    full = Toy()
    ema_full = SubmoduleEMA(decay=0.8, apply_at_end=False)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    _trainer(tmp_path / "full", [ema_full, ckpt_cb], max_steps=8).fit(full, _loader(16))
    path = next((tmp_path / "ckpt").glob("*step=4.ckpt"))
    ckpt = torch.load(path, weights_only=False)
    torch.testing.assert_close(ckpt["state_dict"]["estimator.0.weight"], full.trace[3]["0.weight"])
    initial = Toy().estimator.state_dict()
    avg4 = _expected(full.trace[:4], initial, 0.8)
    torch.testing.assert_close(ckpt["state_dict_ema"]["estimator.0.weight"], avg4["0.weight"])
    assert not any(k.startswith("other.") for k in ckpt["state_dict_ema"])

    resumed = Toy()
    ema2 = SubmoduleEMA(decay=0.8, apply_at_end=False)
    _trainer(tmp_path / "b", [ema2], max_steps=8, enable_checkpointing=False).fit(
        resumed, _loader(16), ckpt_path=path
    )
    torch.testing.assert_close(resumed.estimator[0].weight, full.estimator[0].weight)
    assert ema2.updates == ema_full.updates == 8
    for k in ema_full.shadow:
        torch.testing.assert_close(ema2.shadow[k], ema_full.shadow[k], msg=k)


def test_unknown_submodule_and_changed_shapes_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        _trainer(tmp_path, [SubmoduleEMA(module="nope")], max_steps=1).fit(Toy(), _loader())
    ema = SubmoduleEMA(decay=0.9)
    model = Toy()
    _trainer(tmp_path, [ema], max_steps=1).fit(model, _loader())
    ema.shadow["0.weight"] = torch.zeros(5, 4)
    with pytest.raises(ValueError, match=r"0.weight has shape \(3, 4\) in the model but \(5, 4\)"):
        ema._swap(model)
