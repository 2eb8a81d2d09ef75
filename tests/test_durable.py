"""Durable writes: atomic replacement without leftovers, appends, JSON round trips, one writer per lock."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from include.durable import append_bytes, locked, write_json_atomic, write_text_atomic


def test_write_text_atomic_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    """The target holds the new text and the directory holds nothing else."""
    target = tmp_path / "models.config"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]


def test_write_text_atomic_can_keep_its_temp_file_in_another_dir(tmp_path, monkeypatch):
    """With `tmp_dir` the temp file is made there (where leftovers are looked for), then renamed over."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made = []
    real_open = open

    def spying_open(path, *args, **kwargs):
        made.append(Path(path).parent)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spying_open)
    write_text_atomic(tmp_path / "head.json", "{}", tmp_dir=scratch)
    monkeypatch.undo()
    assert made == [scratch] and (tmp_path / "head.json").read_text() == "{}"
    assert list(scratch.iterdir()) == []


def test_append_bytes_appends_and_returns_the_new_length(tmp_path):
    """Each append lands after the last one; the length returned is the file's."""
    log = tmp_path / "history.jsonl"
    assert append_bytes(log, b'{"a": 1}\n') == 9
    assert append_bytes(log, b'{"b": 2}\n') == 18
    assert log.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


def test_write_json_atomic_round_trips_and_writes_paths_as_text(tmp_path):
    """JSON written is JSON read back, keys sorted; a Path value is written as its string."""
    target = tmp_path / "record.json"
    write_json_atomic(target, {"b": 1, "a": {"path": Path("/x/y")}})
    assert json.loads(target.read_text()) == {"a": {"path": "/x/y"}, "b": 1}
    assert target.read_text().index('"a"') < target.read_text().index('"b"')


def test_locked_lets_one_holder_in_at_a_time(tmp_path):
    """A second `locked` on the same directory waits until the first is released."""
    entered = threading.Event()

    def second_writer() -> None:
        with locked(tmp_path):
            entered.set()

    with locked(tmp_path):
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.2)
        assert not entered.is_set()
    thread.join(10)
    assert entered.is_set()
