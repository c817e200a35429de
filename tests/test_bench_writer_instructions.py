"""benchmarks/writer_instructions.py counts the work it means to: the writer child's batches.

Without valgrind: the counted part run in this process, on a store it then reads back.
"""

from __future__ import annotations

import marshal
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import writer_instructions

from nectoproxy.store import SQLiteStore, batch
from nectoproxy.store.process import _Pipe


def test_its_batches_are_what_the_proxy_sends_the_child() -> None:
    data = writer_instructions._batch(random.Random(1), 0, 3)
    pipe = _Pipe.__new__(_Pipe)
    messages = list(map(pipe._message, marshal.loads(data)))
    assert [type(m) for m in messages] == [batch.Started, batch.Chunk, batch.Finished] * 3
    started = messages[0]
    assert isinstance(started, batch.Started) and started.record.host == "www.example.test"
    finished = messages[2]
    assert isinstance(finished, batch.Finished) and finished.fields["status"] == 200


def test_the_counted_part_stores_and_indexes_every_flow(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(writer_instructions.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    monkeypatch.setattr(writer_instructions.shutil, "rmtree", lambda *a, **k: None)
    writer_instructions.work(25, 10, write=True)
    with SQLiteStore(tmp_path / "flows.db") as store:
        assert store.stats().total == 25
        found, _ = store.list_flows(search="app-7.js")
        assert [f.url for f in found] == ["https://www.example.test/static/app-7.js"]
        assert store.index_pending() == 0  # (every flow was indexed by the counted part)
