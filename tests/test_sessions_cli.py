"""`nectoproxy sessions ...` through nectoproxy.cli.main, on a flow store in a temporary
NECTOPROXY_HOME: every action, its output, its exit code, and one-line errors."""

from __future__ import annotations

import io
import json
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nectoproxy.cli import main
from nectoproxy.har import read_har
from nectoproxy.store import FlowRecord, SQLiteStore, new_flow_id


@dataclass
class Result:
    code: int
    out: str
    err: str


class TTYInput(io.StringIO):
    """Standard input that claims to be a terminal, with the user's answer already typed."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NECTOPROXY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NECTOPROXY_CONFIG", raising=False)
    monkeypatch.delenv("NECTOPROXY_WEB_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    return tmp_path / "home"


@pytest.fixture
def run(home: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def sessions(*argv: str) -> Result:
        code = main(["sessions", *argv, "--no-config"])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return sessions


def store_with_flows(path: Path) -> None:
    """Two sessions: "api" (3 flows, active) and "empty"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with SQLiteStore(path) as store:
        store.create_session("empty")
        api = store.start_run()
        store.rename_session(api.id, "api")
        for n, (status, body) in enumerate([(200, b'{"ok": true}'), (404, b"missing"),
                                            (200, bytes(range(256)))]):
            store.save_flow(FlowRecord(
                id=new_flow_id(), method="GET", url=f"https://api.test/{n}", host="api.test",
                port=443, path=f"/{n}", scheme="https", status=status, reason="",
                request_headers=[("Host", "api.test"), ("X-Ünïcode", "Zoë")],
                response_headers=[("Content-Type", "application/octet-stream")],
                content_type="application/octet-stream", started_at=1_700_000_000.0 + n,
                duration=1.0, timings={"complete": 1.0}), b"", body)


def test_list_without_a_store_says_so_and_creates_nothing(run, home):
    result = run("list")
    assert result.code == 0 and result.err == ""
    assert f"No flow store at {home / 'flows.db'} yet" in result.out
    as_json = run("list", "--json")
    assert as_json.code == 0 and json.loads(as_json.out) == []
    assert "No flow store" in as_json.err
    assert not home.exists()


@pytest.mark.parametrize("argv", [("activate", "x"), ("rename", "x", "y"), ("delete", "x"),
                                  ("export", "x")])
def test_other_reading_commands_without_a_store_fail_in_one_line(run, home, argv):
    result = run(*argv)
    assert result.code == 1 and result.out == ""
    assert result.err == f"nectoproxy sessions: error: no flow store at {home / 'flows.db'} " \
                         f"(so no session 'x')\n"
    assert not home.exists()


def test_create_makes_the_store_owner_only_and_list_shows_it(run, home):
    assert run("create", "first").code == 0
    created = run("create", "second", "--activate")
    assert created.code == 0 and created.out == "Created session 2 'second' (active)\n"
    for path in (home, home / "flows.db"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)
    listing = run("list")
    assert listing.code == 0
    lines = listing.out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "FLOWS", "STORED", "CREATED"]
    assert lines[1].split()[:4] == ["*", "2", "second", "0"]
    assert lines[2].startswith("  ") and lines[2].split()[:2] == ["1", "first"]
    assert "0 B" in lines[1] and str(home / "flows.db") in lines[-1]
    rows = json.loads(run("list", "--json").out)
    assert [(r["id"], r["name"], r["active"], r["flowCount"]) for r in rows] == [
        (2, "second", True, 0), (1, "first", False, 0)]
    assert set(rows[0]) == {"id", "name", "createdAt", "active", "flowCount", "storedBytes"}


def test_activate_and_rename_by_id_or_name(run, home):
    store_with_flows(home / "flows.db")
    result = run("activate", "empty")
    assert result.code == 0 and result.out.startswith("Activated session 1 'empty'")
    renamed = run("rename", "2", "api v2")
    assert renamed.code == 0 and renamed.out == "Renamed session 2 'api' to 'api v2'\n"
    rows = json.loads(run("list", "--json").out)
    assert [(r["name"], r["active"], r["flowCount"]) for r in rows] == [
        ("api v2", False, 3), ("empty", True, 0)]
    missing = run("activate", "nope")
    assert missing.code == 1 and missing.out == ""
    assert missing.err == ("nectoproxy sessions: error: no session 'nope' "
                           "(see `nectoproxy sessions list`)\n")
    blank = run("rename", "empty", " ")
    assert blank.code == 1 and blank.err.count("\n") == 1 and "1 to 200 characters" in blank.err


def test_delete_asks_on_a_terminal_and_needs_yes_otherwise(run, home, monkeypatch):
    store_with_flows(home / "flows.db")
    refused = run("delete", "api")
    assert refused.code == 1 and "--yes" in refused.err and refused.err.count("\n") == 1
    monkeypatch.setattr(sys, "stdin", TTYInput("n\n"))
    kept = run("delete", "api")
    assert kept.code == 1 and "Delete session 2 'api' (3 flows" in kept.out
    assert "Aborted" in kept.out
    assert len(json.loads(run("list", "--json").out)) == 2
    monkeypatch.setattr(sys, "stdin", TTYInput("y\n"))
    deleted = run("delete", "api")
    assert deleted.code == 0 and "Deleted session 2 'api' (3 flows" in deleted.out
    assert "Active now: session 1 'empty'" in deleted.out  # it was the active one
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run("delete", "1", "--yes").code == 0
    rows = json.loads(run("list", "--json").out)
    assert len(rows) == 1 and rows[0]["active"]  # a new one took over capture


def test_export_to_stdout_and_to_a_file(run, home, tmp_path):
    store_with_flows(home / "flows.db")
    result = run("export", "api")
    assert result.code == 0 and result.err == ""
    document = json.loads(result.out)
    assert [e["request"]["url"] for e in document["log"]["entries"]] == [
        f"https://api.test/{n}" for n in range(3)]
    assert document["log"]["comment"] == "NectoProxy session 2: api"
    assert json.loads(run("export", "2", "-o", "-").out) == document

    target = tmp_path / "out" / "api.har"
    target.parent.mkdir()
    written = run("export", "api", "-o", str(target), "--filter", "status:404")
    assert written.code == 0
    assert written.out == f"Exported 1 flows of session 2 'api' to {target}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # a HAR holds cookies and tokens
    [(record, _, body)] = read_har(target)
    assert record.status == 404 and body == b"missing"
    assert record.request_headers == [("Host", "api.test"), ("X-Ünïcode", "Zoë")]
    assert [p.name for p in target.parent.iterdir()] == ["api.har"]  # no temporary left


def test_export_errors(run, home, tmp_path):
    store_with_flows(home / "flows.db")
    bad = run("export", "api", "--filter", "status:4x4")
    assert bad.code == 2 and bad.out == ""
    assert bad.err == ("nectoproxy sessions: error: invalid filter 'status:4x4': invalid "
                       "status '4x4': expected 404, 4xx, >=400 or 400-499 at 7\n")
    unclosed = run("export", "api", "--filter", "(host:a.test")
    assert unclosed.code == 2 and unclosed.err.endswith("unclosed '(' at 0\n")
    unknown = run("export", "nope")
    assert unknown.code == 1 and unknown.err.startswith("nectoproxy sessions: error: no session")
    nowhere = run("export", "api", "-o", str(tmp_path / "no" / "such" / "dir.har"))
    assert nowhere.code == 1 and nowhere.err.count("\n") == 1
    assert "dir.har: No such file or directory" in nowhere.err


def test_import_a_file_and_from_stdin(run, home, tmp_path, monkeypatch):
    store_with_flows(home / "flows.db")
    exported = tmp_path / "api.har"
    assert run("export", "api", "-o", str(exported)).code == 0
    result = run("import", str(exported))
    assert result.code == 0
    assert result.out.startswith("Imported 3 flows into session 3 'Imported api.har'")
    # They started in 2023: retention (by start time, 30 days by default) will delete them.
    assert result.err == ("nectoproxy sessions: warning: flows of this HAR started more than "
                          "30 days ago ([web] max_age_days): retention will delete them\n")
    named = exported.read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(named)))
    from_stdin = run("import", "-", "--name", "piped")
    assert from_stdin.code == 0 and "into session 4 'piped'" in from_stdin.out
    rows = {r["name"]: r for r in json.loads(run("list", "--json").out)}
    assert rows["Imported api.har"]["flowCount"] == rows["piped"]["flowCount"] == 3
    assert rows["api"]["active"]  # importing does not move capture
    with SQLiteStore(home / "flows.db") as store:
        for name in ("api", "piped"):
            session = store.find_session(name)
            flows = store.list_flows(session.id, order="oldest")[0]
            bodies = [store.get_body(f.id, "response") for f in flows]
            assert bodies == [(b'{"ok": true}', False), (b"missing", False),
                              (bytes(range(256)), False)]


def test_import_into_a_new_store_and_bad_files(run, home, tmp_path):
    bad = tmp_path / "bad.har"
    bad.write_text('{"log": {"entries": [{"request": {"method": "GET", "url": "/x"}}]}}')
    result = run("import", str(bad))
    assert result.code == 1 and result.out == ""
    assert result.err == ("nectoproxy sessions: error: log.entries[0].request.url: not an "
                          "absolute URL: '/x'\n")
    assert json.loads(run("list", "--json").out) == []  # the store exists, nothing was kept
    not_json = tmp_path / "notes.txt"
    not_json.write_text("hello")
    assert run("import", str(not_json)).err.startswith("nectoproxy sessions: error: not JSON")
    missing = run("import", str(tmp_path / "missing.har"))
    assert missing.code == 1 and "cannot read" in missing.err and "missing.har" in missing.err
    fresh = tmp_path / "fresh.har"
    fresh.write_text(json.dumps({"log": {"entries": [
        {"request": {"method": "GET", "url": "https://now.test/"},
         "response": {"status": 200, "content": {"size": 2, "mimeType": "text/plain",
                                                 "text": "ok"}}}]}}))
    imported = run("import", str(fresh))
    assert imported.code == 0 and imported.err == ""  # no start time: now, no warning
    assert re.search(r"Imported 1 flows into session \d+ 'Imported fresh.har'", imported.out)


def test_config_file_and_options_in_either_place(home, tmp_path, capsys):
    store = tmp_path / "elsewhere" / "mine.db"
    config = tmp_path / "nectoproxy.toml"
    config.write_text(f'[web]\nstore = "{store}"\n')
    assert main(["sessions", "create", "here", "--config", str(config)]) == 0
    assert store.is_file() and not (home / "flows.db").exists()
    capsys.readouterr()
    assert main(["--config", str(config), "sessions", "list", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["here"]
    assert main(["sessions", "--config", str(config), "list"]) == 0
    assert "here" in capsys.readouterr().out


def test_a_file_that_is_not_a_store(run, home):
    home.mkdir()
    (home / "flows.db").write_text("not a database at all, just text" * 100)
    result = run("list")
    assert result.code == 1 and result.err.count("\n") == 1
    assert result.err.startswith(f"nectoproxy sessions: error: flow store {home / 'flows.db'}")
