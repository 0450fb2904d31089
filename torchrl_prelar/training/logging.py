"""TorchRL loggers for a run: CSV always, wandb (offline by default) when asked."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        """Log the run's resolved ``config``, nested sections flattened to dotted keys.

        Each logger's ``log_hparams``: wandb stores it as the run config; the CSV logger
        writes ``texts/hparams<N>.txt`` (``key: value`` lines) in its run folder, one new
        file per call, so a later stage or a resume in the same ``run_dir`` keeps the
        earlier ones (``hparams0.txt`` is the first stage started there).

        Examples:
            >>> import tempfile
            >>> run_dir = Path(tempfile.mkdtemp())
            >>> loggers = RunLoggers.create(run_dir, "demo", backends=["csv"])
            >>> loggers.log_hparams({"seed": 1, "pretrain": {"lr": 0.001}})
            >>> print((run_dir / "csv/demo/texts/hparams0.txt").read_text())
            pretrain.lr: 0.001
            seed: 1
        """
        flat = flatten_config(config)
        for logger in self.loggers:
            if isinstance(logger, CSVLogger):
                texts = Path(logger.experiment.log_dir) / "texts"
                written = [p for p in texts.glob("hparams*.txt") if _HPARAMS.fullmatch(p.name)]
                logger.experiment.text_counter["hparams"] = len(written)
            logger.log_hparams(flat)


_HPARAMS = re.compile(r"hparams\d+\.txt")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with its nested mappings flattened to dotted keys (empty ones kept as ``{}``).

    Examples:
        >>> flatten_config({"seed": 1, "loss": {"kl": {"free": 1.0}}, "overrides": {}})
        {'seed': 1, 'loss.kl.free': 1.0, 'overrides': {}}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat
