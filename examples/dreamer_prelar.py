"""PreLAR with TorchRL: pre-train a Dreamer world model on action-free video, then fine-tune.

    python examples/dreamer_prelar.py                      # quick CPU demo
    python examples/dreamer_prelar.py preset=paper device=cuda data.path=/data/rlbench
    python examples/dreamer_prelar.py stage=pretrain pretrain.updates=1000 loss.beta_action=0.5
    python examples/dreamer_prelar.py stage=finetune finetune.task=drawer-open-v3
    python examples/dreamer_prelar.py stage=finetune finetune.init=dreamer   # no pre-training
    python examples/dreamer_prelar.py finetune.init=apv        # APV baseline (both stages)
    python examples/dreamer_prelar.py finetune.init=contextwm  # ContextWM baseline (both stages)
    torchrun --nproc-per-node 4 examples/dreamer_prelar.py stage=pretrain device=cuda

Everything is written to ``run_dir`` (default ``runs/prelar_<preset>``); running the same
command again resumes from the last checkpoint. The logic lives in
:mod:`torchrl_prelar.training.run`.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from torchrl_prelar.training.finetune import run_finetune  # noqa: E402
from torchrl_prelar.training.run import run_pretrain  # noqa: E402

STAGES = ("pretrain", "finetune", "all")


@hydra.main(config_path="config", config_name="config", version_base=None)
def main(config: DictConfig) -> None:
    cfg = OmegaConf.to_container(config, resolve=True)
    if cfg["stage"] not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {cfg['stage']!r}.")
    if cfg["stage"] != "pretrain" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            f"stage={cfg['stage']} under torchrun: only stage=pretrain runs on several ranks; "
            "fine-tune with a single process (see docs/distributed.md)."
        )
    if cfg["stage"] in ("pretrain", "all"):
        summary = run_pretrain(cfg)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"pre-training done: {summary['last_metrics']} -> {cfg['run_dir']}")
    if cfg["stage"] in ("finetune", "all"):
        summary = run_finetune(cfg)
        print(f"fine-tuning done: {summary['evaluations'][-1:]} -> {cfg['run_dir']}")


if __name__ == "__main__":
    main()
