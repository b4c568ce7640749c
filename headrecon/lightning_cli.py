"""`headrecon fit|validate|test|predict --config lightning_configs/<name>.yaml`: LightningCLI with class_path configs.

Any LightningModule / LightningDataModule may be named by `class_path` (subclass mode), so the same command
trains `GaussianRegressor` (SHeaP), the supervised `FlameEstimator` baseline or, later, the AffectNet probe.
Checkpoints record how the model was instantiated (LightningCLI's instantiator), so
`GaussianRegressor.load_from_checkpoint(...)` rebuilds nested class_path arguments such as the estimator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

__all__ = ["HeadreconCLI", "run_lightning_cli", "missing_files"]


#: Config keys whose values are files or folders that must exist before training starts.
#: (AffectNet's CSV/checkpoint arguments are not listed: pre-extracted feature files may replace them, and the
#: AffectNet DataModule reports what it lacks itself.)
PATH_KEYS = {"flame_dir", "pretrained_path", "vgg_path", "onnx_path", "iresnet_path", "checkpoint", "weights"}


def missing_files(config: Any, where: str = "") -> list[tuple[str, str]]:
    """(config key, path) for every file-valued argument (see `PATH_KEYS`, and data `roots`) that does not exist."""
    out: list[tuple[str, str]] = []
    if isinstance(config, dict) or hasattr(config, "items"):
        for key, value in config.items():
            here = f"{where}.{key}" if where else str(key)
            if key in PATH_KEYS and isinstance(value, (str, os.PathLike)) and value:
                if not Path(value).exists():
                    out.append((here, str(value)))
            elif key == "roots" and hasattr(value, "items"):
                for name, root in value.items():
                    for r in root if isinstance(root, (list, tuple)) else [root]:
                        if not Path(r).exists():
                            out.append((f"{here}.{name}", str(r)))
            else:
                out += missing_files(value, here)
    elif isinstance(config, (list, tuple)):
        for i, v in enumerate(config):
            out += missing_files(v, f"{where}[{i}]")
    return out


class HeadreconCLI(LightningCLI):
    """LightningCLI with headrecon defaults (offline hubs, subclass mode, config saved next to the logs).

    Before any class is instantiated, every file the config names is checked and all missing ones are reported
    together (instead of failing on the first one after minutes of set-up).
    """

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        missing = missing_files(cfg.as_dict() if hasattr(cfg, "as_dict") else cfg)
        if missing:
            lines = "\n".join(f"  {key}: {path}" for key, path in missing)
            raise SystemExit(
                f"headrecon: {len(missing)} file(s) named by the config do not exist:\n{lines}\n"
                "Edit the paths in the config (or override them on the command line, e.g. "
                "--model.init_args.estimator.init_args.flame_dir=...). FLAME: https://flame.is.tue.mpg.de; "
                "FaRL: github.com/FacePerceiver/FaRL releases; see README 'FLAME' and 'pretrained weights'."
            )


def run_lightning_cli(argv: list[str] | None) -> int:
    """Run e.g. ["fit", "--config", "lightning_configs/sheap_synthetic.yaml"] (None: read sys.argv)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    HeadreconCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
    return 0
