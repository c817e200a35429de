"""``GET /api/traffic/{id}/export``: a flow's request as a curl or HTTPie command, as raw
HTTP/1.1, or the flow as a HAR document.

Commands are for a POSIX shell: every argument is single-quoted (``shlex.quote``), so no
value is ever expanded. A text body (UTF-8 without control characters other than tab and line
ends) is given inline; any other body is given as base64 piped through ``base64 --decode``
into the command's standard input (``--data-binary @-`` for curl), so the bytes sent are
exactly the stored ones. Headers the tool adds by itself that the recording did not have are
switched off (curl ``-H 'User-Agent:'``, HTTPie ``User-Agent:``).
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from nectoproxy import __version__, har
from nectoproxy.web.common import ApiError, Param, Reply, Routes, context
from nectoproxy.web.messages import Outgoing, authority, framed_headers, from_record
from nectoproxy.web.schemas import ref
from nectoproxy.web.traffic import ID_PARAM, flow_or_404

routes = Routes("export")

FORMATS = ("curl", "httpie", "raw", "har")
_CURL_DEFAULTS = ("User-Agent", "Accept")
_HTTPIE_DEFAULTS = ("User-Agent", "Accept", "Accept-Encoding")


def is_text(body: bytes) -> bool:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\r\n" or c == "\x7f" for c in text)


def _shown_headers(request: Outgoing) -> list[tuple[str, str]]:
    """The fields a command passes: framing and a Host the URL implies are the tool's job."""
    return [(k, v) for k, v in framed_headers(request)
            if k.lower() != "content-length"
            and not (k.lower() == "host" and v == authority(request.url))]


def _missing(headers: list[tuple[str, str]], defaults: tuple[str, ...]) -> list[str]:
    present = {k.lower() for k, _ in headers}
    return [name for name in defaults if name.lower() not in present]


def _pipe(body: bytes) -> str:
    return f"printf '%s' {shlex.quote(base64.b64encode(body).decode())} | base64 --decode | "


def curl_command(request: Outgoing, note: str = "") -> str:
    headers = _shown_headers(request)
    first = ["curl"]
    if request.method == "HEAD":
        first.append("--head")
    elif not (request.method == "GET" and not request.body
              or request.method == "POST" and request.body):
        first += ["-X", shlex.quote(request.method)]
    first.append(shlex.quote(request.url))
    lines = [" ".join(first)]
    lines += [f"-H {shlex.quote(f'{k}: {v}' if v else f'{k};')}" for k, v in headers]
    lines += [f"-H {shlex.quote(f'{name}:')}" for name in _missing(headers, _CURL_DEFAULTS)]
    prefix = ""
    if request.body:
        if not any(k.lower() == "content-type" for k, _ in headers):
            lines.append("-H 'Content-Type:'")  # else curl adds a form type of its own
        if is_text(request.body):
            lines.append(f"--data-raw {shlex.quote(request.body.decode('utf-8'))}")
        else:
            prefix = _pipe(request.body)
            lines.append("--data-binary @-")
    return note + prefix + " \\\n  ".join(lines) + "\n"


#: Characters HTTPie's item syntax reads as separators (``:``, ``;``, ``==``, ``=``, ``:=``,
#: ``@``, ``=@``, ``:=@``, ``:@``); a backslash before one of them is eaten as an escape.
_HTTPIE_SPECIAL = ":;=@"
#: HTTPie takes its METHOD argument only when it is letters (else it reads it as the URL),
#: and requests sends it upper-cased.
_HTTPIE_METHOD = re.compile(r"[A-Z]+")


def _httpie_item(name: str, value: str) -> str:
    if not value:
        return shlex.quote(f"{name};")
    if value[0] in "=@":  # would read as ':=' (JSON) or ':@' (a file): escape the separator
        value = "\\" + value
    return shlex.quote(f"{name}:{value}")


def _httpie_notes(request: Outgoing, headers: list[tuple[str, str]]) -> str:
    """What an HTTPie command cannot say exactly, as comment lines above it."""
    notes = []
    if not _HTTPIE_METHOD.fullmatch(request.method):
        notes.append(f"# HTTPie cannot send the method {request.method!r} as it is "
                     "(letters only, upper-cased): use the curl export\n")
    for name, value in headers:
        if any(f"\\{c}" in value for c in _HTTPIE_SPECIAL):
            notes.append(f"# HTTPie reads a backslash before {_HTTPIE_SPECIAL} as an escape: "
                         f"the {name} header is sent without it\n")
    return "".join(notes)


def httpie_command(request: Outgoing, note: str = "") -> str:
    """An ``http`` command (HTTPie 3): ``http [--ignore-stdin] METHOD URL Name:value ...``, the
    query left in the URL as recorded, a text body as ``--raw=`` (the ``=`` form, so a body
    that starts with ``-`` is not read as an option), any other through standard input."""
    headers = _shown_headers(request)
    args = ["http"]
    prefix = ""
    if request.body and not is_text(request.body):
        prefix = _pipe(request.body)
    else:
        args.append("--ignore-stdin")
    if any(part in (".", "..") for part in urlsplit(request.url).path.split("/")):
        args.append("--path-as-is")  # else the URL's dot segments are squashed before sending
    args += [shlex.quote(request.method), shlex.quote(request.url)]
    items = [_httpie_item(k, v) for k, v in headers]
    items += [shlex.quote(f"{name}:") for name in _missing(headers, _HTTPIE_DEFAULTS)]
    if request.body and not any(k.lower() == "content-type" for k, _ in headers):
        items.append("Content-Type:")  # else HTTPie calls any body application/json
    lines = [" ".join(args), *items]
    if request.body and is_text(request.body):
        lines.append("--raw=" + shlex.quote(request.body.decode("utf-8")))
    return note + _httpie_notes(request, headers) + prefix + " \\\n  ".join(lines) + "\n"


def raw_request(request: Outgoing) -> bytes:
    """The request as HTTP/1.1 bytes: origin-form target, framing fitted to the body."""
    parts = urlsplit(request.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = f"{request.method} {target} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in framed_headers(request)) + "\r\n"
    return head.encode("utf-8", "surrogateescape") + request.body


def _note(truncated: bool, kept: int, size: int | None) -> str:
    if not truncated:
        return ""
    total = f" of {size}" if size else ""
    return f"# the request body was truncated in storage: {kept}{total} bytes kept\n"


_COMMANDS: dict[str, Callable[[Outgoing, str], str]] = {
    "curl": curl_command, "httpie": httpie_command}


@routes.route("GET", "/api/traffic/{id}/export", "A flow as a command, raw HTTP or HAR.",
              params=(ID_PARAM, Param("format", {"enum": list(FORMATS), "default": "curl"})),
              replies={200: Reply("The export (text/plain; HAR: application/json).",
                                  {"type": "string"}, "text/plain"),
                       400: Reply("An unknown format.", ref("Error")),
                       404: Reply("No such flow.", ref("Error"))})
async def export(request: Request) -> Response:
    ctx = context(request)
    fmt = request.query_params.get("format", "curl")
    if fmt not in FORMATS:
        raise ApiError(400, f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    flow_id = request.path_params["id"]
    record = await flow_or_404(ctx, flow_id)
    stored = await ctx.run(ctx.store.get_body, flow_id, "request")
    body, truncated = stored if stored is not None else (b"", False)
    if fmt == "har":
        response = await ctx.run(ctx.store.get_body, flow_id, "response")

        def document() -> str:
            entry = har.har_entry(record, body, None if response is None else response[0])
            return "".join(har.iter_har_json([entry], version=__version__))

        return Response(await ctx.run(document), media_type="application/json", headers={
            "content-disposition": f'attachment; filename="flow-{flow_id}.har"'})
    outgoing = from_record(record, body)
    if fmt == "raw":
        data = raw_request(outgoing)
        charset = "; charset=utf-8" if is_text(data) else ""
        return Response(data, headers={"content-type": "text/plain" + charset})
    text = _COMMANDS[fmt](outgoing, _note(truncated, len(body), record.request_size))
    return Response(text, media_type="text/plain")
