"""Pre-train variants of the objective through the example and gather their latent-action figures.

Each variant is ``examples/dreamer_prelar.py stage=pretrain`` with its own Hydra overrides, run
as ``latent_action_sweep.py`` runs them (``--jobs`` at a time, ``<out>/<name>``, every variant
on the training videos and held-out sets of ``--data``, so rows compare objectives on the same
data with the same probe). When they end, the held-out figures of each run's ``summary.json``
(``pretrain -> latent_actions``: the hand-displacement probe ``probe_r2_motion``, the action
probe on x, y, z, the state-KL ratio, delta-PSNR, on the seen and unseen sets) are gathered
into ``<out>/variants.json`` and printed as a table.

``--references`` adds the supervised references, ``loss=supervised_action`` and
``loss=supervised_displacement``: the same world model, data and number of updates (the
``--common`` overrides), the latent action model trained on the true action or on the hand
displacement p_{t+1} - p_t, the figures the unsupervised codes are judged against.

    python experiments/latent_action_variants.py --out runs/variants --data runs/prelar_quick \\
        --variant default "" --variant paper "loss=paper" \\
        --variant forward "loss=paper loss.lambda_forward_reco=0.5 loss.beta_action=0.1" \\
        --references --common pretrain.updates=300 --jobs 2
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latent_action_sweep import check_args, make_parser, run_variants
from results_report import variants_table

#: The supervised references ``--references`` adds: name -> overrides.
REFERENCES = {
    "supervised_action": "loss=supervised_action",
    "supervised_displacement": "loss=supervised_displacement",
}


def gather(out: Path, variants: Sequence[Sequence[str]], status: dict[str, Any]) -> dict:
    """Each variant's overrides, exit status and ``summary.json`` pre-training section."""
    gathered = {}
    for name, overrides in variants:
        path = out / name / "summary.json"
        summary = json.loads(path.read_text()).get("pretrain", {}) if path.is_file() else {}
        gathered[name] = {"overrides": overrides, **status.get(name, {}), "summary": summary}
    return gathered


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--references", action="store_true", help="add the supervised references as variants"
    )
    args = parser.parse_args(argv)
    if args.references:
        args.variant += [[name, overrides] for name, overrides in REFERENCES.items()]
    check_args(parser, args)
    args.out.mkdir(parents=True, exist_ok=True)
    status = run_variants(args)
    report = {
        "common": args.common,
        "data": str(args.data),
        "variants": gather(args.out, args.variant, status),
    }
    (args.out / "variants.json").write_text(json.dumps(report, indent=2))
    print(variants_table(report["variants"]), flush=True)
    return report


if __name__ == "__main__":
    main()
