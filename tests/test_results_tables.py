"""The one report writer (experiments/results_report.py): docs/results.md, docs/performance.md
and docs/latent_actions.md hold the tables their committed raw files give; any driver's JSON
renders the same way."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from results_report import (
    LATENT_ACTION_TABLES,
    PERFORMANCE_TABLES,
    PRETRAIN_RUN_FIGURES,
    TABLES,
    comparison_arms_table,
    fresh_clone_table,
    latent_action_tables,
    long_reference_table,
    main,
    marked_sections,
    model_gap_differences,
    model_gap_table,
    performance_tables,
    preset_schedule,
    pretrain_run_record,
    render_quality_table,
    results_tables,
    show,
    sweep_table,
    toy_grid_table,
    welch_test,
    write_latent_action_tables,
    write_performance_tables,
    write_results_tables,
    write_section,
)

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks" / "results"
LATENT_ACTIONS = REPO / "docs" / "latent_actions"


def section(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start[^\n]*-->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"the page has no section {name}"
    return match.group(1)


def test_results_page_holds_the_tables_of_the_committed_files():
    page = (REPO / "docs" / "results.md").read_text()
    tables = results_tables(REPO / "docs" / "results")
    assert set(tables) == set(TABLES)
    for name, table in tables.items():
        assert section(page, name) == table, f"{name}: run python experiments/results_report.py"


def test_writing_the_tables_twice_changes_nothing(tmp_path):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    before = (tmp_path / "docs" / "results.md").read_text()
    write_results_tables(tmp_path / "docs")
    write_results_tables(tmp_path / "docs")
    assert (tmp_path / "docs" / "results.md").read_text() == before


def test_arm_summary_counts_every_episode_of_every_seed():
    runs = [
        {"arm": "a", "eval_success": {"5000": 0.2, "10000": 0.4}, "final_wm_loss": 10.0},
        {"arm": "a", "eval_success": {"5000": 0.0, "10000": 0.2}, "final_wm_loss": 12.0},
    ]
    table = comparison_arms_table({"eval_episodes": 5, "runs": runs})
    assert "| a | 2 | 4/20 | 11.0 ± 1.4 |" in table


def test_a_missing_raw_file_is_named(tmp_path):
    for name in (
        "goal_marker_reach.json",
        "goal_marker_reach_hold25.json",
        "goal_marker_reach_hold25_seen.json",
        "goal_probe_reach.json",
        "model_gap.json",
        "model_gap_pretrain_seeds_quick.json",
        "metaworld_reach.json",
        "metaworld_reach_goals.json",
    ):
        (tmp_path / name).write_text("{}")
    with pytest.raises(FileNotFoundError, match="reach35k.json"):
        results_tables(tmp_path)


def test_welch_test_matches_the_formula():
    first, second = {"mean": 24.68, "std": 0.05}, {"mean": 24.21, "std": 0.14}
    t, p = welch_test(first, second, 3, 3)
    error = (0.05**2 / 3 + 0.14**2 / 3) ** 0.5
    assert t == pytest.approx((24.68 - 24.21) / error)
    assert 0.01 < p < 0.05


def _gap_row(arm, seeds, mean, std):
    return {"arm": arm, "seeds": seeds, "psnr_1": {"mean": mean + 1, "std": std},
            "psnr_mean_1_3": {"mean": mean, "std": std}, "s_per_run": 5}  # fmt: skip


def test_model_gap_columns_follow_the_horizon_and_one_seed_has_no_test():
    results = {"variants": {"v": {"rows": [_gap_row("prelar", 1, 25.0, None),
                                           _gap_row("apv", 1, 24.5, None)]}}}  # fmt: skip
    table = model_gap_table(results, "v")
    assert table.splitlines()[0] == "| arm | seeds | PSNR @ 1 | PSNR, mean 1-3 |"
    assert "| prelar | 1 | 26.00 | 25.00 |" in table
    differences = model_gap_differences(results, "v", [("prelar", "apv")])
    assert differences.splitlines()[-1] == "| prelar - apv | +0.50 | - | - | 1 + 1 |"


def test_show_renders_a_model_gap_file_with_its_comparisons():
    results = json.loads((REPO / "docs" / "results" / "model_gap.json").read_text())
    text = show(results)
    assert text.startswith("### pixel_trunk\n")
    assert model_gap_table(results, "pixel_trunk") in text
    # prelar against every other arm with seeds, not against the last-frame row
    assert "| prelar - dreamer | +0.54 | 14.61 | 0.0002 | 3 + 3 |" in text
    assert "last observed frame" not in text.split("| pair |", 1)[1].split("###")[0]


def test_show_renders_a_comparison_file_and_refuses_others(tmp_path, capsys):
    path = REPO / "docs" / "results" / "reach35k.json"
    main(["--show", str(path)])
    text = capsys.readouterr().out
    page = (REPO / "docs" / "results.md").read_text()
    for name in ("table-reach35k-runs", "table-reach35k-arms"):
        assert section(page, name) in text
    with pytest.raises(ValueError, match="'variants'"):
        show({"runs": {}})


def test_a_whole_page_writer_keeps_the_marked_sections(tmp_path):
    page = tmp_path / "results.md"
    write_section(page, "model_gap", "| gap |\n", generator="x.py")
    page.write_text("# Another page\n\n" + marked_sections(page.read_text()))
    write_section(page, "model_gap", "| gap, again |\n", generator="x.py")
    text = page.read_text()
    assert text.startswith("# Another page\n")
    assert "| gap, again |" in text and "| gap |" not in text


def test_performance_page_holds_the_tables_of_the_committed_files():
    page = (REPO / "docs" / "performance.md").read_text()
    tables = performance_tables(BENCHMARKS)
    assert set(tables) == set(PERFORMANCE_TABLES)
    for name, table in tables.items():
        assert section(page, name) == table, f"{name}: run python experiments/results_report.py"


def test_writing_the_performance_tables_twice_changes_nothing(tmp_path):
    shutil.copy(REPO / "docs" / "performance.md", tmp_path / "performance.md")
    before = (tmp_path / "performance.md").read_text()
    write_performance_tables(tmp_path, BENCHMARKS)
    write_performance_tables(tmp_path, BENCHMARKS)
    assert (tmp_path / "performance.md").read_text() == before


def test_a_missing_benchmark_file_is_named(tmp_path):
    for path in BENCHMARKS.glob("*.json"):
        if path.name != "env_render_quality.json":
            shutil.copy(path, tmp_path / path.name)
    with pytest.raises(FileNotFoundError, match="env_render_quality.json"):
        performance_tables(tmp_path)


def test_render_quality_milliseconds_are_the_inverse_rate():
    table = render_quality_table({"steps_per_s": {"fast": 80.0, "custom": 25.0}})
    assert table.splitlines()[2].endswith("| 80.0 | 12.5 |")
    assert table.splitlines()[3] == "| `custom` | 25.0 | 40.0 |"


def _config(folder: Path, **finetune) -> Path:
    (folder / "preset").mkdir(parents=True)
    (folder / "config.yaml").write_text(
        "defaults:\n  - _self_\n  - preset: null\nfinetune:\n  env_steps: 1000\n"
        "  prefill: 100\n  prefill_updates: 0\n  update_every: 10\n"
    )
    lines = "".join(f"  {key}: {value}\n" for key, value in finetune.items())
    (folder / "preset" / "p.yaml").write_text("# @package _global_\nfinetune:\n" + lines)
    return folder


def test_preset_schedule_counts_the_updates_of_a_run(tmp_path):
    config = _config(tmp_path, env_steps=2100, prefill=600, prefill_updates=7, update_every=3)
    schedule = preset_schedule("p", config)
    assert schedule == {"env_steps": 2100, "prefill": 600, "prefill_updates": 7,
                        "update_every": 3, "updates": 7 + 1500 // 3}  # fmt: skip


def test_fresh_clone_update_alone_is_the_steady_pace_less_its_env_steps(tmp_path):
    config = _config(tmp_path, update_every=12)
    record = {
        "command": "python examples/dreamer_prelar.py preset=p",
        "commit": "abc1234",
        "summary": {"env_steps": 900, "updates": 70, "seconds_per_update": 1.25,
                    "seconds_per_env_step": 0.02},
        "steady_seconds_per_update_incl_env_steps": 1.1,
        "before": {"seconds_per_update": "1.3-1.4", "source": "older code"},
    }  # fmt: skip
    rows = fresh_clone_table(record, config).splitlines()[2:]
    assert rows[0].endswith("| 1.250 |")
    assert "its 12 env steps | 1.100 |" in rows[1]
    assert rows[2].endswith(f"| {1.1 - 12 * 0.02:.3f} |")
    assert rows[3] == "| older code | 1.3-1.4 |"


def test_performance_projection_uses_the_newest_code_and_the_preset():
    table = performance_tables(BENCHMARKS)["table-finetune-projection"]
    record = json.loads((BENCHMARKS / "finetune_step_small_50x50.json").read_text())
    seconds = record["results"]["working tree"]["seconds_per_update"]
    schedule = preset_schedule("metaworld")
    row = next(line for line in table.splitlines() if line.startswith("| `metaworld`"))
    assert row.endswith(f"| {seconds:.3f} | {schedule['updates'] * seconds / 3600:.2f} |")


def test_latent_actions_page_holds_the_tables_of_the_committed_files():
    page = (REPO / "docs" / "latent_actions.md").read_text()
    tables = latent_action_tables(LATENT_ACTIONS)
    assert set(tables) == set(LATENT_ACTION_TABLES)
    for name, table in tables.items():
        assert section(page, name) == table, f"{name}: run python experiments/results_report.py"


def test_writing_the_latent_action_tables_twice_changes_nothing(tmp_path):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    before = (tmp_path / "docs" / "latent_actions.md").read_text()
    write_latent_action_tables(tmp_path / "docs")
    write_latent_action_tables(tmp_path / "docs")
    assert (tmp_path / "docs" / "latent_actions.md").read_text() == before


def test_render_quality_rows_hold_each_run_and_the_means_against_the_reference():
    table = latent_action_tables(LATENT_ACTIONS)["table-render-quality"]
    record = json.loads((LATENT_ACTIONS / "render_quality.json").read_text())
    lines = table.splitlines()
    for run in record["runs"]:
        motion = f"{run['seen']['probe_r2_motion']:.2f} / {run['unseen']['probe_r2_motion']:.2f}"
        start = f"| `{run['render_quality']}` | `{run['objective']}` | {run['seed']} |"
        row = next(line for line in lines if line.startswith(start))
        assert f"| {run['commit']} | {motion} |" in row
        assert f"`{run['command']}`" in table
    for quality in ("fast", "antialiased"):
        code = [r for r in record["runs"]
                if r["render_quality"] == quality and r["objective"] == "prelar"]  # fmt: skip
        (reference,) = [r for r in record["runs"] if r["render_quality"] == quality
                        and r["objective"] == "supervised_displacement"]  # fmt: skip
        seen = np.mean([r["seen"]["probe_r2_motion"] for r in code])
        ratio = seen / reference["seen"]["probe_r2_motion"]
        row = next(line for line in lines if line.startswith(f"| `{quality}` | {len(code)} |"))
        assert row.split(" | ")[2].startswith(f"{seen:.2f} / ")
        assert row.split(" | ")[4].startswith(f"{ratio:.2f} / ")


def test_sweep_marks_the_updates_a_run_did_not_reach():
    figures = {f"{key}_{held_out}": {"300": 1.0} for held_out in ("seen", "unseen")
               for key in ("probe_r2", "state_kl_shuffled_ratio", "delta_psnr")}  # fmt: skip
    table = sweep_table({"variants": {"v": {"figures": figures}}}, updates=("300", "600"))
    assert table.splitlines()[-1] == (
        "| `v` | 1.00 / 1.00 | - | 1.00 / 1.00 | - | +1.00 / +1.00 | - |"
    )


def test_toy_settings_show_the_range_over_their_seeds():
    rows = [
        {"setting": "s", "flags": "--f", "r2_move": {"0": move, "9": move + 0.1},
         "r2_next_position": position, "state_kl_own": 0.1, "state_kl_shuffled": shuffled,
         "action_kl": 1.5}
        for move, position, shuffled in ((0.5, -0.1, 20.0), (0.7, -0.05, 30.0))
    ]  # fmt: skip
    table = toy_grid_table({"grid_world": {"rows": rows}})
    assert table.splitlines()[-1] == (
        "| s (`--f`) | 2 | 0.50-0.70 / 0.60-0.80 | -0.10 to -0.05 | 0.10 / 20.0-30.0 | 1.50 |"
    )


def test_a_pretraining_record_reads_the_figures_the_pretraining_logs():
    from torchrl_prelar.evaluation.held_out import LOGGED_FIGURES

    assert sorted(PRETRAIN_RUN_FIGURES.values()) == sorted(LOGGED_FIGURES)


def test_a_pretraining_record_reads_every_evaluation_and_names_a_missing_log(tmp_path):
    scalars = tmp_path / "logs" / "scalars" / "pretrain"
    scalars.mkdir(parents=True)
    for figure in PRETRAIN_RUN_FIGURES.values():
        for name in ("seen", "unseen"):
            value = 0.3 if name == "seen" else 0.2
            (scalars / f"{figure}_{name}.csv").write_text(f"500,{value}\n1000,{value * 2}\n")
    summary = {"updates": 1000, "seconds_this_run": 5.0, "latent_actions": {"seen": {}}}
    (tmp_path / "summary.json").write_text(json.dumps({"pretrain": summary}))
    (tmp_path / "hydra").mkdir()
    (tmp_path / "hydra" / "overrides.yaml").write_text("- preset=long\n- seed=1\n")

    record = pretrain_run_record(tmp_path)

    assert record["command"] == "python examples/dreamer_prelar.py preset=long seed=1"
    assert [row["updates"] for row in record["rows"]] == [500, 1000]
    assert record["rows"][1]["motion_seen"] == 0.6 and record["rows"][0]["ratio_unseen"] == 0.2
    reference = {"rows": [{**row, "motion_seen": 2 * row["motion_seen"]} for row in record["rows"]]}
    table = long_reference_table(record, reference).splitlines()
    assert table[-1] == "| 1000 | 0.60 / 0.40 | 1.20 / 0.40 | 0.50x / 1.00x | NO / yes |"
    (scalars / "delta_psnr_unseen.csv").unlink()
    with pytest.raises(FileNotFoundError, match="delta_psnr_unseen.csv"):
        pretrain_run_record(tmp_path)


def test_publishing_renames_the_runs_and_merges_goal_probes(tmp_path):
    kind = {"driver": "policy", "action_hold": 1, "steps": 100}

    def probe(run_dir, env_steps, hand_r2):
        return {
            "command": f"goal_probe.py --run d={run_dir} --out {run_dir.rsplit('/', 1)[0]}/x.json",
            "settings": kind,
            "runs": [{"run_dir": run_dir, "env_steps": env_steps, "hand_r2": hand_r2}],
        }

    dest = tmp_path / "docs" / "probes.json"
    dest.parent.mkdir()
    kept = probe("runs/metaworld/seed0", 35000, 0.5)
    replaced = probe("runs/metaworld/seed2", 6805, 0.1)
    dest.write_text(json.dumps({"probes": [kept, replaced]}))
    scratch = "/scratch/exp/mw"
    source = tmp_path / "probe.json"
    new_probes = [probe(f"{scratch}/seed2", 6805, 0.3), probe(f"{scratch}/seed2", 15000, 0.4)]
    source.write_text(json.dumps({"probes": new_probes}))
    renames = [f"{scratch}=runs/metaworld", f"{scratch}/x.json=docs/results/probes.json"]
    main(["--publish", str(source), str(dest), "--rename", *renames])
    probes = json.loads(dest.read_text())["probes"]
    rows = [(run["run_dir"], run["env_steps"], run["hand_r2"]) for p in probes for run in p["runs"]]
    assert rows == [
        ("runs/metaworld/seed0", 35000, 0.5),
        ("runs/metaworld/seed2", 6805, 0.3),
        ("runs/metaworld/seed2", 15000, 0.4),
    ]
    assert probes[-1]["command"].endswith(
        "--run d=runs/metaworld/seed2 --out docs/results/probes.json"
    )
    assert scratch not in dest.read_text()
    with pytest.raises(SystemExit):
        main(["--publish", str(source), str(dest), "--rename", "no-equals-sign"])

    curves = tmp_path / "curves.json"  # anchor_curves.py keys each arm's runs by folder
    curves.write_text(json.dumps({"arms": {"dreamer": {"runs": {f"{scratch}/seed2": [1]}}}}))
    main(["--publish", str(curves), str(tmp_path / "out.json"), "--rename", renames[0]])
    published = json.loads((tmp_path / "out.json").read_text())
    assert published == {"arms": {"dreamer": {"runs": {"runs/metaworld/seed2": [1]}}}}


@pytest.mark.parametrize(
    "source_text, dest_text, named",
    [
        (None, None, "missing.json"),
        ("{not json", None, "source.json"),
        ('{"probes": []}', '{"runs": []}', "holds no 'probes'"),
    ],
    ids=["missing source", "corrupt source", "destination without probes"],
)
def test_publishing_a_bad_file_names_it(tmp_path, capsys, source_text, dest_text, named):
    source = tmp_path / ("missing.json" if source_text is None else "source.json")
    if source_text is not None:
        source.write_text(source_text)
    dest = tmp_path / "dest.json"
    if dest_text is not None:
        dest.write_text(dest_text)
    with pytest.raises(SystemExit):
        main(["--publish", str(source), str(dest)])
    assert named in capsys.readouterr().err
