"""The LightningModules: wiring nets, losses and data together."""

from headrecon.modules.flame_estimator import FlameEstimator

__all__ = ["FlameEstimator"]
