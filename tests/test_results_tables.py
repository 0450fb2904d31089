"""docs/results.md holds the tables its committed raw files give (experiments/results_report.py)."""

import re
import shutil
from pathlib import Path

import pytest
from results_report import TABLES, reach35k_arms_table, results_tables, write_results_tables

REPO = Path(__file__).resolve().parents[1]


def section(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start[^\n]*-->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"docs/results.md has no section {name}"
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
    table = reach35k_arms_table({"eval_episodes": 5, "runs": runs})
    assert "| a | 2 | 4/20 | 11.0 ± 1.4 |" in table


def test_a_missing_raw_file_is_named(tmp_path):
    (tmp_path / "model_gap.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="reach35k.json"):
        results_tables(tmp_path)
