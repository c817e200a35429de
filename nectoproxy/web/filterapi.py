"""``/api/filter``: the words of the filter language (docs/store.md) and the list's sorts,
from the parser's own tables, so a UI's suggestions cannot drift from what the API accepts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.store import MARK_COLOURS
from nectoproxy.store.filters import ALIASES, FIELDS, FLAG_ALIASES
from nectoproxy.store.filterterms import FLAGS
from nectoproxy.store.sorting import SORTS
from nectoproxy.web.common import Reply, Routes
from nectoproxy.web.schemas import array, obj

routes = Routes("filter")

#: What each ``field:`` matches, in a few words (docs/store.md has the whole table; a test
#: checks that every field has one).
FIELD_HELP = {
    "host": "the host exactly; *.example.com as a pattern",
    "method": "the method exactly",
    "status": "404, 4xx, >=400 or 400-499",
    "url": "a regular expression searched in the URL",
    "path": "the path starts with it; with *, a pattern",
    "header": "a request or response header: name or name=value",
    "reqheader": "a request header: name or name=value",
    "resheader": "a response header: name or name=value",
    "body": "the request or response body contains it",
    "reqbody": "the request body contains it",
    "resbody": "the response body contains it",
    "type": "the response content type contains it",
    "error": "the error contains it",
    "mark": "marked with that colour",
    "marked": "marked with that colour (as mark:)",
    "tag": "has that tag",
    "comment": "the comment contains it",
    "scheme": "http or https",
    "kind": "http or tunnel",
    "mode": "how the client came in: regular, reverse or socks5",
    "client": "the client address contains it",
    "server": "the server address contains it",
    "is": "a flag: error, pending, marked, websocket, ...",
}

LANGUAGE = obj({
    "fields": array(obj({"name": {"type": "string"}, "description": {"type": "string"}})),
    "flags": array({"type": "string"}),
    "marks": array({"type": "string"}),
    "aliases": array({"type": "string"}),
    "operators": array({"type": "string"}),
    "sorts": array({"type": "string"}),
})



@routes.route("GET", "/api/filter", "The filter language's fields, flags, mark colours, "
              "aliases and operators, and the list's sorts (for suggestions).",
              replies={200: Reply("The words.", LANGUAGE)})
async def filter_language(request: Request) -> Response:
    return JSONResponse({
        "fields": [{"name": name, "description": FIELD_HELP.get(name, "")} for name in FIELDS],
        "flags": list(FLAGS), "marks": list(MARK_COLOURS),
        "aliases": [*ALIASES, *FLAG_ALIASES], "operators": ["and", "or", "not"],
        "sorts": list(SORTS),
    })
