"""Time one pre-training update of the public PreLAR reference code on a CPU or a GPU.

The CPU figure of record comes from ``../shared/tools/ref_pretrain_bench.py``; this script
times the same update where that tool cannot go: on a CUDA device, and in the reference's own
mixed precision (``--precision 16``: ``torch.cuda.amp`` float16 autocast and a GradScaler).
The model, its initialisation and the batch follow that tool: the reference's
``configs/prelar_pretraining.yaml`` sections ``defaults`` + ``rlbench_pretrain`` with the
README's flags (stochastic 64-d latent action, ``rank_loss sign``), ``PreLARPretrain`` with
Xavier initialisation and channels-last convolutions, the update driven through its
``CarryOverState``, random uint8 frames ``[16, 25, 3, 64, 64]`` cast to float32 inside the
timed region. Modules the update never uses (``gym``, ``kornia``, ``torchvision``, ``wandb``)
are replaced by empty modules when they are not installed.

    python benchmarks/reference_update.py /path/to/PreLAR --device cuda --precision 16
    python benchmarks/reference_update.py /path/to/PreLAR --device cpu --iters 1

The last line is ``reference_update {"seconds_per_update": ..., ...}`` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
import types
import warnings

import torch

_UNUSED_MODULES = ("gym", "kornia", "torchvision", "torchvision.transforms", "wandb")
_README_FLAGS = [
    "--vanet.type_",
    "stoch",
    "--vanet.discrete",
    "0",
    "--vanet.stoch",
    "64",
    "--rank_loss",
    "sign",
]


class _Space:
    """What the reference reads of a gym space: its shape."""

    def __init__(self, *shape: int) -> None:
        self.shape = tuple(shape)


def _stand_in_for_missing(names: tuple[str, ...]) -> list[str]:
    """Put an empty module in ``sys.modules`` for each name that cannot be imported."""
    replaced = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            parent = None
            for depth, part in enumerate(name.split(".")):
                full = ".".join(name.split(".")[: depth + 1])
                module = sys.modules.setdefault(full, types.ModuleType(full))
                if parent is not None:
                    setattr(parent, part, module)
                parent = module
            replaced.append(name)
    return replaced


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_reference_update(
    reference: str, *, device: str, precision: int, warmup: int, iters: int, seed: int = 0
) -> dict:
    """Build the reference's PreLAR pre-training agent and time ``warmup + iters`` updates.

    Returns the median seconds per update and the run's details.
    """
    if not os.path.isdir(os.path.join(reference, "wmlib")):
        raise FileNotFoundError(f"{reference!r} is not a PreLAR checkout: it has no wmlib/")
    warnings.filterwarnings("ignore")
    sys.path.insert(0, os.path.abspath(reference))
    replaced = _stand_in_for_missing(_UNUSED_MODULES)
    from ruamel.yaml import YAML

    with contextlib.redirect_stdout(io.StringIO()):
        import wmlib.agents as agents
        import wmlib.utils as utils
        from wmlib.train.pretrainer import CarryOverState, Pretrainer

        with open(os.path.join(reference, "configs", "prelar_pretraining.yaml")) as file:
            sections = YAML(typ="safe", pure=True).load(file.read())
        config = utils.Config(sections["defaults"]).update(sections["rlbench_pretrain"])
        flags = _README_FLAGS + ["--precision", str(precision), "--device", device]
        config = utils.Flags(config).parse(flags)
        utils.set_seed(seed)
        step = utils.Counter(0)
        obs_space = {
            "image": _Space(64, 64, 3),
            "reward": _Space(),
            "is_first": _Space(),
            "is_last": _Space(),
            "is_terminal": _Space(),
            "state": _Space(39),
            "success": _Space(),
        }
        agent = agents.PreLARPretrain(config, obs_space, {"action": _Space(4)}, step)
        agent = agent.to(torch.device(config.device))
        agent.init_optimizers()
        agent.apply(lambda module: Pretrainer.weights_init(None, module))
    update = CarryOverState(agent.train)
    target = torch.device(config.device)
    batch, length = int(config.dataset.batch), int(config.dataset.length)
    generator = torch.Generator().manual_seed(seed)
    times, losses = [], []
    for index in range(warmup + iters):
        frames = torch.randint(
            0, 256, (batch, length, 3, 64, 64), dtype=torch.uint8, generator=generator
        )
        is_first = torch.zeros(batch, length, dtype=torch.bool)
        is_first[:, 0] = True
        raw = {"image": frames, "action": torch.zeros(batch, length, 1), "is_first": is_first}
        _synchronize(target)
        start = time.perf_counter()
        metrics = update({key: value.to(target, torch.float32) for key, value in raw.items()})
        _synchronize(target)
        if index >= warmup:
            times.append(time.perf_counter() - start)
        step.increment()
        losses.append(float(metrics["wm/model_loss"]))
    return {
        "device": str(target),
        "device_name": torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu",
        "precision": precision,
        "batch": batch,
        "length": length,
        "seconds_per_update": round(statistics.median(times), 4),
        "update_times": [round(t, 4) for t in times],
        "final_loss": round(losses[-1], 4),
        "parameters_m": round(sum(p.numel() for p in agent.parameters()) / 1e6, 2),
        "stand_ins": replaced,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="checkout of github.com/zhanglixuan0720/PreLAR")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", type=int, default=32, choices=[16, 32])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = time_reference_update(
        args.reference,
        device=args.device,
        precision=args.precision,
        warmup=args.warmup,
        iters=args.iters,
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    print("reference_update " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
