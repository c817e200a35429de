"""The HTTPie export (``GET /api/traffic/{id}/export?format=httpie``).

HTTPie is not installed here, so the commands are checked the way HTTPie reads them: the shell
words by ``shlex`` (POSIX rules, as bash splits them), then each request item by
:func:`httpie_item`, a copy of HTTPie 3's ``KeyValueArgType`` (httpie/cli/argtypes.py:
backslash escapes of separator characters, then the first and longest separator), and the
options the way argparse takes them.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from test_web_support import WebServer

from nectoproxy.web.export import httpie_command
from nectoproxy.web.messages import Outgoing

#: HTTPie 3's request item separators (httpie/cli/constants.py, SEPARATOR_GROUP_ALL_ITEMS).
SEPARATORS = (":", ";", ":@", "==", "==@", "=", ":=", "@", "=@", ":=@")
SPECIAL = set("".join(SEPARATORS))


class Escaped(str):
    pass


def httpie_item(word: str) -> tuple[str, str, str]:
    """``(key, separator, value)`` as HTTPie 3 parses a request item."""
    tokens: list[str] = [""]
    characters = iter(word)
    for char in characters:
        if char == "\\":
            following = next(characters, "")
            if following in SPECIAL and following:
                tokens += [Escaped(following), ""]
            else:
                tokens[-1] += "\\" + following
        else:
            tokens[-1] += char
    for index, token in enumerate(tokens):
        if isinstance(token, Escaped):
            continue
        found = {}
        for separator in sorted(SEPARATORS, key=len):  # the longest at a position wins
            at = token.find(separator)
            if at != -1:
                found[at] = separator
        if found:
            separator = found[min(found)]
            key, value = token.split(separator, 1)
            return ("".join(tokens[:index]) + key, separator,
                    value + "".join(tokens[index + 1:]))
    raise AssertionError(f"{word!r} is not a request item")


@dataclass
class Http:
    """An ``http`` command line as HTTPie would take it."""

    notes: list[str]
    stdin: bytes | None
    ignore_stdin: bool
    path_as_is: bool
    method: str
    url: str
    items: list[tuple[str, str, str]]
    raw: str | None


def parse(command: str) -> Http:
    lines = command.splitlines(keepends=True)
    notes = [line for line in lines if line.startswith("#")]
    rest = "".join(line for line in lines if not line.startswith("#"))
    stdin = None
    if rest.startswith("printf "):
        pipe, _, rest = rest.partition(" | base64 --decode | ")
        stdin = subprocess.run(["bash", "-c", pipe + " | base64 --decode"], capture_output=True,
                               check=True, timeout=30).stdout
    words = shlex.split(rest.replace(" \\\n  ", " "))
    assert words[0] == "http"
    positional = words[1:]
    options = []
    while positional[0].startswith("--"):
        options.append(positional.pop(0))
    assert set(options) <= {"--ignore-stdin", "--path-as-is"}, options
    raw = None
    items = []
    for word in positional[2:]:
        assert not word.startswith("-") or word.startswith("--raw="), word  # argparse: an option
        if word.startswith("--raw="):
            raw = word[len("--raw="):]
        else:
            items.append(httpie_item(word))
    return Http(notes, stdin, "--ignore-stdin" in options, "--path-as-is" in options,
                positional[0], positional[1], items, raw)


def headers_of(http: Http) -> list[tuple[str, str | None]]:
    """What HTTPie sends for the items: ``Name:value``, ``Name;`` empty, ``Name:`` unset."""
    result: list[tuple[str, str | None]] = []
    for key, separator, value in http.items:
        assert separator in (":", ";"), (key, separator, value)
        result.append((key, value if separator == ";" or value else None))
    return result


def test_headers_query_and_a_text_body_read_back_as_recorded() -> None:
    body = "-starts like an option; it's $(whoami) `id` \\ \n ünï"
    url = "https://api.example.test/v1/items?q=a%20b&x='1'&y==2&at=@home"
    command = httpie_command(Outgoing("POST", url, [
        ("Host", "api.example.test"), ("X-Quote", "a'b\"c $PATH"), ("X-Empty", ""),
        ("X-Json", "=like json"), ("X-File", "@/etc/passwd"), ("X-Colons", "a:b=c;d@e"),
        ("Accept", "text/plain"), ("Content-Length", "3")], body.encode()))
    http = parse(command)
    assert http.notes == [] and http.ignore_stdin and http.stdin is None
    assert (http.method, http.url) == ("POST", url)  # the query stays in the URL, as recorded
    assert http.raw == body
    assert headers_of(http) == [
        ("X-Quote", "a'b\"c $PATH"), ("X-Empty", ""), ("X-Json", "=like json"),
        ("X-File", "@/etc/passwd"), ("X-Colons", "a:b=c;d@e"), ("Accept", "text/plain"),
        # HTTPie's own headers, switched off; Content-Type too (it would say JSON)
        ("User-Agent", None), ("Accept-Encoding", None), ("Content-Type", None)]
    assert "--verify" not in command  # TLS is verified, as HTTPie does by default


def test_a_binary_body_goes_through_stdin_byte_exact() -> None:
    body = bytes(range(256)) * 3
    http = parse(httpie_command(Outgoing("PUT", "http://127.0.0.1:8000/upload", [
        ("Host", "127.0.0.1:8000"), ("Content-Type", "application/octet-stream")], body)))
    assert http.stdin == body and not http.ignore_stdin and http.raw is None
    assert (http.method, http.url) == ("PUT", "http://127.0.0.1:8000/upload")
    assert headers_of(http) == [("Content-Type", "application/octet-stream"),
                                ("User-Agent", None), ("Accept", None),
                                ("Accept-Encoding", None)]


def test_no_body_ignores_stdin_and_a_foreign_host_is_kept() -> None:
    http = parse(httpie_command(Outgoing("GET", "http://127.0.0.1:8000/", [
        ("Host", "virtual.test"), ("Accept", "*/*"), ("User-Agent", "curl/8"),
        ("Accept-Encoding", "gzip")], b"")))
    assert http.ignore_stdin and http.raw is None and http.stdin is None
    assert headers_of(http) == [("Host", "virtual.test"), ("Accept", "*/*"),
                                ("User-Agent", "curl/8"), ("Accept-Encoding", "gzip")]


def test_dot_segments_are_kept_with_path_as_is() -> None:
    http = parse(httpie_command(Outgoing("GET", "http://a.test/x/../y/./z?q=/../", [], b"")))
    assert http.path_as_is and http.url == "http://a.test/x/../y/./z?q=/../"
    assert not parse(httpie_command(Outgoing("GET", "http://a.test/x..y/?q=/../", [], b""))
                     ).path_as_is


def test_what_httpie_cannot_say_is_noted() -> None:
    command = httpie_command(Outgoing("M-SEARCH", "http://127.0.0.1:1900/", [
        ("Host", "127.0.0.1:1900"), ("X-Path", "C:\\=dir")], b""))
    notes = parse(command).notes
    assert len(notes) == 2
    assert "method 'M-SEARCH'" in notes[0] and "use the curl export" in notes[0]
    assert "the X-Path header is sent without it" in notes[1]
    assert parse(httpie_command(Outgoing("GET", "http://a.test/", [
        ("X-Path", "C:\\dir\\")], b""))).notes == []  # a backslash before a letter is kept


def test_the_api_serves_it(tmp_path: Path) -> None:
    with WebServer(tmp_path) as web, web.client() as client:
        flow = web.save(b"\x00\x01binary", b"", method="POST",
                        url="https://api.example.test/up",
                        request_headers=[("Host", "api.example.test")])
        answer = client.get(f"/api/traffic/{flow.id}/export", params={"format": "httpie"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    http = parse(answer.text)
    assert http.stdin == b"\x00\x01binary" and http.url == "https://api.example.test/up"
    assert ("Content-Type", None) in headers_of(http)
