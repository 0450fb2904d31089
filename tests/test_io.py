"""Atomic writes: concurrent writers of one file, and a failing writer."""

from __future__ import annotations

import threading

import pytest

from torchrl_prelar.io import atomic_write, atomic_write_text


def test_concurrent_writers_of_one_file_do_not_collide(tmp_path):
    """Several writers of the same file (runs sharing a data folder) each stage their own
    temporary file: none fails, the file holds one complete write, no temporary is left."""
    path = tmp_path / "metadata.json"
    texts = [f'{{"writer": {i}, "pad": "{"x" * 20000}"}}' for i in range(8)]
    errors = []

    def write(text):
        try:
            for _ in range(25):
                atomic_write_text(path, text)
        except Exception as error:  # noqa: BLE001 (collected, asserted below)
            errors.append(error)

    threads = [threading.Thread(target=write, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert path.read_text() in texts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_text(tmp_path / "a.json", "old")

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
