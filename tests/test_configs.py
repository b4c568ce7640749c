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
