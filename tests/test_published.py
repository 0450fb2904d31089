"""The published Meta-world success curves (APV repository) and their loader."""

import json
from pathlib import Path

import numpy as np
import pytest

from torchrl_prelar.evaluation.published import (
    PUBLISHED_CURVES_FILE,
    load_published_curves,
    published_summary,
)

REPO = Path(__file__).resolve().parents[1]
TASKS = {
    "metaworld_lever_pull",
    "metaworld_drawer_open",
    "metaworld_door_lock",
    "metaworld_button_press_topdown_wall",
    "metaworld_reach",
    "metaworld_dial_turn",
}

# Mean over 8 seeds (two decimals), min and max (one decimal), read from the same file before.
CROSS_CHECK = [
    ("DreamerV2", "metaworld_reach", 5000, 0.00, 0.0, 0.0),
    ("DreamerV2", "metaworld_reach", 15000, 0.15, 0.0, 0.4),
    ("DreamerV2", "metaworld_reach", 25000, 0.19, 0.0, 0.4),
    ("DreamerV2", "metaworld_reach", 35000, 0.34, 0.1, 0.6),
    ("DreamerV2", "metaworld_reach", 55000, 0.31, 0.1, 0.7),
    ("DreamerV2", "metaworld_reach", 105000, 0.38, 0.2, 0.8),
    ("APV", "metaworld_reach", 35000, 0.35, 0.2, 0.7),
    ("APV", "metaworld_reach", 105000, 0.70, 0.5, 0.9),
    ("DreamerV2", "metaworld_door_lock", 5000, 0.10, 0.0, 0.4),
]


@pytest.fixture(scope="module")
def published():
    return load_published_curves()


def test_committed_file_is_read(published):
    assert published == load_published_curves(REPO / PUBLISHED_CURVES_FILE)
    assert published["env_steps"] == list(range(5000, 245001, 10000))
    assert set(published["curves"]) == {"DreamerV2", "APV"}
    source = published["source"]
    assert source["repository"] == "https://github.com/younggyoseo/apv"
    assert source["path"] == "data/metaworld_raw_data.pkl"
    assert len(source["commit"]) == 40
    assert set(source["metaworld_v3_tasks"]) == TASKS
    for tasks in published["curves"].values():
        assert set(tasks) == TASKS
        for seeds in tasks.values():
            assert np.asarray(seeds).shape == (8, 25)


def test_values_are_success_fractions(published):
    """Every value is k/10, except five 5000-step points that are k/11."""
    elevenths = []
    for algorithm, tasks in published["curves"].items():
        for task, seeds in tasks.items():
            values = np.asarray(seeds)
            assert ((values >= 0) & (values <= 1)).all()
            off = ~np.isclose(values * 10, np.round(values * 10))
            for seed, point in zip(*np.nonzero(off), strict=True):
                value = values[seed, point]
                assert np.isclose(value * 11, round(value * 11))
                elevenths.append((algorithm, task, int(seed), int(point), round(value * 11)))
    assert sorted(elevenths) == [
        ("APV", "metaworld_dial_turn", 6, 0, 1),
        ("APV", "metaworld_door_lock", 6, 0, 2),
        ("DreamerV2", "metaworld_door_lock", 0, 0, 2),
        ("DreamerV2", "metaworld_door_lock", 1, 0, 4),
        ("DreamerV2", "metaworld_door_lock", 2, 0, 3),
    ]


@pytest.mark.parametrize(("algorithm", "task", "step", "mean", "low", "high"), CROSS_CHECK)
def test_summary_reproduces_cross_check(published, algorithm, task, step, mean, low, high):
    summary = published_summary(published, algorithm, task)
    assert list(summary) == published["env_steps"]
    point = published["env_steps"].index(step)
    seeds = np.asarray(published["curves"][algorithm][task])[:, point]
    assert summary[step]["mean"] == pytest.approx(np.mean(seeds))
    assert summary[step]["min"] == pytest.approx(np.min(seeds))
    assert summary[step]["max"] == pytest.approx(np.max(seeds))
    assert summary[step]["mean"] == pytest.approx(mean, abs=0.005 + 1e-9)
    assert round(summary[step]["min"], 1) == low
    assert round(summary[step]["max"], 1) == high


def test_unknown_names_list_the_available_ones(published):
    with pytest.raises(KeyError, match="unknown algorithm 'PreLAR'; available: APV, DreamerV2"):
        published_summary(published, "PreLAR", "metaworld_reach")
    with pytest.raises(KeyError, match="unknown task 'reach-v3'") as error:
        published_summary(published, "APV", "reach-v3")
    assert all(task in str(error.value) for task in TASKS)


def test_missing_file_names_the_location(tmp_path):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(FileNotFoundError, match="nowhere.json") as error:
        load_published_curves(missing)
    assert str(PUBLISHED_CURVES_FILE) in str(error.value)


def test_malformed_file_is_refused(tmp_path):
    file = tmp_path / "curves.json"
    file.write_text(json.dumps({"env_steps": [5000, 15000], "curves": {"APV": {"x": [[0.1]]}}}))
    with pytest.raises(ValueError, match=r"curves\['APV'\]\['x'\]"):
        load_published_curves(file)
    file.write_text(json.dumps({"curves": {}}))
    with pytest.raises(ValueError, match="lacks env_steps"):
        published_summary(json.loads(file.read_text()), "APV", "x")
