"""Training workflow: fit/evaluate/predict, the one train step (and the custom-step hook:
``fit(..., loss_fn=...)``, :class:`PlayerStep` for GANs, :class:`FullBatch` for one graph),
callbacks, history, checkpoints, ensembles."""

from gpudl.train.batches import FullBatch
from gpudl.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from gpudl.train.checkpoint import load_checkpoint, save_checkpoint
from gpudl.train.custom import PlayerStep
from gpudl.train.ensemble import Ensemble, bootstrap_indices, fit_ensemble
from gpudl.train.history import History
from gpudl.train.loop import evaluate, fit, predict
from gpudl.train.oom import OutOfMemoryError
from gpudl.train.step import StepResult, StepRunner, TrainStep, supervised_step

__all__ = [n for n in dir() if not n.startswith("_")]
