"""`headrecon fit|validate|test|predict --config lightning_configs/<name>.yaml`: LightningCLI with class_path configs.

Any LightningModule / LightningDataModule may be named by `class_path` (subclass mode), so the same command
trains `GaussianRegressor` (SHeaP), the supervised `FlameEstimator` baseline or, later, the AffectNet probe.
Checkpoints record how the model was instantiated (LightningCLI's instantiator), so
`GaussianRegressor.load_from_checkpoint(...)` rebuilds nested class_path arguments such as the estimator.
"""

from __future__ import annotations

import os

from lightning.pytorch.cli import LightningCLI

__all__ = ["HeadreconCLI", "run_lightning_cli"]


class HeadreconCLI(LightningCLI):
    """LightningCLI with headrecon defaults (offline hubs, subclass mode, config saved next to the logs)."""


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
