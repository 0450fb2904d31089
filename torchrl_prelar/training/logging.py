"""TorchRL loggers for a run: CSV always, wandb (offline by default) when asked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torchrl.record.loggers import Logger
from torchrl.record.loggers.csv import CSVLogger


class RunLoggers:
    """Fan-out to several TorchRL loggers, with a key prefix per stage.

    Examples:
        >>> import tempfile
        >>> loggers = RunLoggers.create(tempfile.mkdtemp(), "demo", backends=["csv"])
        >>> loggers.log({"loss": 1.0}, step=1, prefix="pretrain/")
    """

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    @classmethod
    def create(
        cls,
        run_dir: str | Path,
        exp_name: str,
        *,
        backends: list[str] = ("csv",),
        project: str = "torchrl_prelar",
        wandb_mode: str = "offline",
    ) -> RunLoggers:
        """CSV under ``run_dir/csv``; wandb under ``run_dir/wandb`` (offline: no network)."""
        loggers: list[Logger] = []
        for backend in backends:
            if backend == "csv":
                loggers.append(CSVLogger(exp_name, log_dir=str(Path(run_dir) / "csv")))
            elif backend == "wandb":
                from torchrl.record.loggers.wandb import WandbLogger

                os.environ.setdefault("WANDB_SILENT", "true")
                loggers.append(
                    WandbLogger(
                        exp_name,
                        offline=wandb_mode == "offline",
                        save_dir=str(Path(run_dir)),
                        project=project,
                        log_env_packages=False,
                    )
                )
            else:
                raise ValueError(f"Unknown logger backend {backend!r}: expected 'csv' or 'wandb'.")
        return cls(loggers)

    def log(self, metrics: Mapping[str, float], step: int, prefix: str = "") -> None:
        for logger in self.loggers:
            for name, value in metrics.items():
                logger.log_scalar(f"{prefix}{name}", float(value), step=step)

    def log_hparams(self, config: Mapping) -> None:
        for logger in self.loggers:
            logger.log_hparams(dict(config))
