"""The LightningModules: wiring nets, losses and data together."""

from headrecon.modules.flame_estimator import FlameEstimator
from headrecon.modules.gaussian_regressor import LOSS_WEIGHTS, GaussianRegressor

__all__ = ["FlameEstimator", "GaussianRegressor", "LOSS_WEIGHTS"]
