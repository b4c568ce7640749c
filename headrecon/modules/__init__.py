"""The LightningModules: wiring nets, losses and data together."""

from headrecon.modules.affectnet_probe import AffectNetProbe
from headrecon.modules.flame_estimator import FlameEstimator
from headrecon.modules.gaussian_regressor import LOSS_WEIGHTS, GaussianRegressor

__all__ = ["AffectNetProbe", "FlameEstimator", "GaussianRegressor", "LOSS_WEIGHTS"]
