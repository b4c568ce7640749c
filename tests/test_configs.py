"""The shipped LightningCLI configs parse, and the paper config names every missing file at once."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_paper_config_lists_all_missing_files(tmp_path, capsys):
    from headrecon.cli import main

    cwd = os.getcwd()
    os.chdir(tmp_path)  # none of the config's relative paths exist here
    try:
        with pytest.raises(SystemExit) as e:
            main(["fit", "--config", str(ROOT / "lightning_configs/sheap_paper.yaml")])
    finally:
        os.chdir(cwd)
    msg = str(e.value)
    for needle in ("flame_dir", "FaRL-Base-Patch16", "vgg16-397923af.pth", "w600k_r50.onnx", "emoca", "dinov2",
                   "roots.nersemble", "roots.vfhq"):  # fmt: skip
        assert needle in msg, needle
    assert "8 file(s)" in msg


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, run_dir, max_time",
    [("sheap_synthetic.yaml", ".", None), ("sheap_synthetic_mesh.yaml", "mesh", "{milliseconds: 1}")],
    ids=["gaussians", "mesh-time-limit"],
)
def test_demo_end_to_end_writes_report(tmp_path, config, run_dir, max_time):
    import json

    from headrecon.demo import run_demo

    cwd = os.getcwd()
    os.chdir(tmp_path)  # the synthetic config's paths are relative (demo_out/...)
    try:
        report = run_demo(["--config", str(ROOT / "lightning_configs" / config), "--subjects", "3",
                           "--clips", "1", "--frames", "4", "--trainer.max_steps", "3",
                           "--trainer.val_check_interval", "3", "--trainer.enable_progress_bar", "false",
                           *(["--trainer.max_time", max_time] if max_time else [])])  # fmt: skip
    finally:
        os.chdir(cwd)
    out = tmp_path / "demo_out"
    # the configs' max_time (9 min) does not bind at 3 steps; 1 ms stops training after the first step
    assert (report["steps"], report["stopped_by_time"]) == ((1, True) if max_time else (3, False))
    assert report["max_steps"] == 3
    run = out / run_dir
    saved = json.loads((run / "report.json").read_text())
    for k in ("before", "after", "mean_head"):
        assert saved["vertex_error_mm"][k] > 0
    assert (run / "samples.png").stat().st_size > 0 and (out / "procedural_head.png").exists()
    assert saved["renderer"] == ("mesh" if run_dir == "mesh" else "gaussians")
    assert (saved["gaussians"] is None) == (run_dir == "mesh")
    assert (run / "checkpoints" / "last.ckpt").exists() and any((run / "logs").rglob("events.out.tfevents*"))
