"Snapshots: a save that dies part-way leaves the previous one intact."

import numpy as np
import pytest

from llm_vector_index import DamagedFiles
from llm_vector_index.storage import array_writer, load_snapshot, save_snapshot


def test_round_trip_and_old_generations_removed(tmp_path):
    tmp_path = tmp_path / "index"
    assert load_snapshot(tmp_path) is None
    save_snapshot(tmp_path, {"a": array_writer(np.arange(3))}, meta={"x": 1})
    save_snapshot(tmp_path, {"a": array_writer(np.arange(5))}, meta={"x": 2})
    snapshot = load_snapshot(tmp_path)
    assert snapshot.array("a").tolist() == [0, 1, 2, 3, 4]
    assert snapshot.meta["x"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.2", "manifest.json"]


def test_crash_mid_save_keeps_the_previous_snapshot(tmp_path):
    tmp_path = tmp_path / "index"
    save_snapshot(tmp_path, {"a": array_writer(np.arange(3)), "b": array_writer(np.ones(2))})

    def dies(path):
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_snapshot(tmp_path, {"a": array_writer(np.arange(9)), "b": dies})
    snapshot = load_snapshot(tmp_path)
    assert snapshot.array("a").tolist() == [0, 1, 2]
    assert snapshot.array("b").tolist() == [1.0, 1.0]
    # the next save clears what the crashed one left behind
    save_snapshot(tmp_path, {"a": array_writer(np.arange(1)), "b": array_writer(np.zeros(1))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.2", "b.2", "manifest.json"]


def test_loaded_arrays_can_be_edited_without_touching_the_file(tmp_path):
    tmp_path = tmp_path / "index"
    save_snapshot(tmp_path, {"a": array_writer(np.arange(3))})
    array = load_snapshot(tmp_path).array("a")
    array[0] = 42
    assert load_snapshot(tmp_path).array("a").tolist() == [0, 1, 2]


def test_kept_files_carry_over_unwritten_and_dropped_ones_go(tmp_path):
    tmp_path = tmp_path / "index"
    save_snapshot(tmp_path, {"a": array_writer(np.arange(3)), "b": array_writer(np.ones(2))})
    a_before = (tmp_path / "a.1").stat()
    save_snapshot(tmp_path, {"c": array_writer(np.zeros(4))}, keep=["a"])
    snapshot = load_snapshot(tmp_path)
    assert snapshot.files["a"].name == "a.1" and (tmp_path / "a.1").stat() == a_before
    assert snapshot.array("a").tolist() == [0, 1, 2] and snapshot.array("c").tolist() == [0] * 4
    # b was in the previous snapshot and not in this one: removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.1", "c.2", "manifest.json"]
    with pytest.raises(ValueError, match="No saved file 'zzz'"):
        save_snapshot(tmp_path, {}, keep=["zzz"])
    (tmp_path / "a.1").write_bytes(b"changed!")  # damage to a kept file is still found
    with pytest.raises(DamagedFiles, match=r"a\.1 has 8 bytes"):
        load_snapshot(tmp_path)
