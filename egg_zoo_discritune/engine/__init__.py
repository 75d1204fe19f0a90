"""A built-in engine with EGG's public names, signatures and semantics, used when EGG is not installed."""

from egg_zoo_discritune.engine.baselines import BuiltInBaseline, MeanBaseline, NoBaseline
from egg_zoo_discritune.engine.callbacks import Callback, ConsoleLogger, InteractionSaver, ProgressBarLogger
from egg_zoo_discritune.engine.checkpoint import CheckpointSaver
from egg_zoo_discritune.engine.interaction import Interaction, LoggingStrategy
from egg_zoo_discritune.engine.trainer import Trainer

__all__ = [
    "BuiltInBaseline", "Callback", "CheckpointSaver", "ConsoleLogger", "Interaction", "InteractionSaver",
    "LoggingStrategy", "MeanBaseline", "NoBaseline", "ProgressBarLogger", "Trainer",
]
