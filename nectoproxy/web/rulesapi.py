"""``/api/rules``: the rules plugin's rules one by one, as the original NectoProxy's API had
them (list, create, change, toggle, reorder, delete).

These are conveniences over the ``rules`` settings (``/api/settings/rules``, whose value is
``{"rules": [...], "configured": [...]}``): each call reads that value, changes the list and
puts it back, under the settings' lock. A rule's id is its name (names are unique). Rules of
nectoproxy.toml (``configured``) are listed with ``"readOnly": true`` and cannot be changed
here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.web.common import ApiError, Reply, Routes, context, path_param, read_json
from nectoproxy.web.schemas import obj, ref
from nectoproxy.web.settingsapi import INVALID, provider, read, update

routes = Routes("rules")
SETTINGS = "rules"

ID = path_param("id", "The rule's id: its name.")
RULE = {"type": "object", "description": "A rule: the keys of a [[rule]] table of the rules "
        "plugin (name, enabled, priority, matchers, actions), plus `id` (its name) and, for "
        "rules of nectoproxy.toml, `readOnly`.", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "enabled": {"type": "boolean"}, "priority": {"type": "integer"},
            "readOnly": {"type": "boolean"}}}
RULE_LIST = obj({"rules": {"type": "array", "items": RULE},
                 "configured": {"type": "array", "items": RULE},
                 "file": {"type": "string"}, "error": {"type": "string"}},
                required=("rules", "configured"))
READ_ONLY = Reply("A rule of nectoproxy.toml, which is changed there.", ref("Error"))
NOT_FOUND = Reply("No rules plugin (the error says how to enable it), or no such rule.",
                  ref("Error"))


def _default_name(table: Any, n: int) -> str:
    name = table.get("name") if isinstance(table, dict) else None
    return name if isinstance(name, str) and name else f"rule {n}"


def _shown(table: dict[str, Any], *, read_only: bool = False, n: int = 0) -> dict[str, Any]:
    shown = {"id": _default_name(table, n), **table}
    if read_only:
        shown["readOnly"] = True
    return shown


def _body_rule(data: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """A rule from a request body: ``id`` and ``readOnly`` are the API's, not the rule's."""
    rule = {k: v for k, v in data.items() if k not in ("id", "readOnly")}
    if name is not None and "name" not in rule:
        rule["name"] = name
    return rule


def _index(rules: list[Any], configured: list[Any], rule_id: str) -> int:
    for n, table in enumerate(rules):
        if isinstance(table, dict) and table.get("name") == rule_id:
            return n
    if any(_default_name(t, n) == rule_id for n, t in enumerate(configured, 1)):
        raise ApiError(409, f"rule {rule_id!r} is defined in nectoproxy.toml "
                       "([[plugins.rules.rule]]): change it there")
    raise ApiError(404, f"no rule {rule_id!r}")


def _find(value: dict[str, Any], rule_id: str) -> dict[str, Any]:
    for table in value["rules"]:
        if isinstance(table, dict) and table.get("name") == rule_id:
            return _shown(table)
    for n, table in enumerate(value["configured"], 1):
        if _default_name(table, n) == rule_id:
            return _shown(table, read_only=True, n=n)
    raise ApiError(404, f"no rule {rule_id!r}")


def _listing(value: dict[str, Any]) -> dict[str, Any]:
    listing = {"rules": [_shown(t) for t in value["rules"] if isinstance(t, dict)],
               "configured": [_shown(t, read_only=True, n=n)
                              for n, t in enumerate(value["configured"], 1)],
               "file": value.get("file", "")}
    if value.get("error"):
        listing["error"] = value["error"]
    return listing


async def _change(request: Request, change: Callable[[list[Any], list[Any]], Any]) -> Any:
    """Apply ``change(rules, configured)`` to the rules file's list and save it; returns what
    ``change`` returned and the new value."""
    ctx = context(request)
    result: list[Any] = []

    def edit(value: dict[str, Any]) -> dict[str, Any]:
        if value.get("error") and not value["rules"]:  # not even readable: keep it as it is
            raise ApiError(409, f"the rules file cannot be read ({value['error']}): fix it, or "
                           "replace every rule with PUT /api/settings/rules")
        rules = list(value["rules"])
        result.append(change(rules, value["configured"]))
        return {"rules": rules}

    new = await update(ctx, SETTINGS, edit)
    return result[0], new


@routes.route("GET", "/api/rules", "The rules: the rules file's (editable, in file order) and "
              "nectoproxy.toml's (configured, read-only).",
              replies={200: Reply("The rules.", RULE_LIST), 404: NOT_FOUND})
async def list_rules(request: Request) -> Response:
    ctx = context(request)
    return JSONResponse(_listing(await read(ctx, provider(ctx, SETTINGS))))


@routes.route("POST", "/api/rules", "Add a rule (at the end of the rules file, or at `index`); "
              "it applies in every worker within a second.", body=RULE, body_required=True,
              replies={201: Reply("The rule.", RULE), 400: INVALID, 404: NOT_FOUND})
async def create_rule(request: Request) -> Response:
    data = await read_json(request)
    index = data.pop("index", None)
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        raise ApiError(400, f"index: expected an integer, got {index!r}", field="index")
    rule = _body_rule(data)

    def add(rules: list[Any], configured: list[Any]) -> None:
        rules.insert(len(rules) if index is None else max(0, index), rule)

    _, new = await _change(request, add)
    position = len(new["rules"]) - 1 if index is None else min(max(0, index),
                                                                len(new["rules"]) - 1)
    return JSONResponse(_shown(new["rules"][position]), status_code=201)


@routes.route("POST", "/api/rules/reorder", "Put the rules file's rules in this order "
              "(`ids`: every id once). Priority still decides first; order breaks ties.",
              body=obj({"ids": {"type": "array", "items": {"type": "string"}}}),
              body_required=True,
              replies={200: Reply("The rules.", RULE_LIST), 400: INVALID, 404: NOT_FOUND})
async def reorder_rules(request: Request) -> Response:
    data = await read_json(request)
    ids = data.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "ids: expected a list of rule ids", field="ids")

    def reorder(rules: list[Any], configured: list[Any]) -> None:
        by_id = {str(t.get("name")): t for t in rules if isinstance(t, dict)}
        if sorted(ids) != sorted(by_id) or len(set(ids)) != len(ids):
            missing = sorted(set(by_id) - set(ids))
            unknown = sorted(set(ids) - set(by_id))
            raise ApiError(400, "ids: must name every rule of the rules file once"
                           + (f"; missing: {', '.join(missing)}" if missing else "")
                           + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                           field="ids")
        rules[:] = [by_id[i] for i in ids]

    _, new = await _change(request, reorder)
    return JSONResponse(_listing(new))


@routes.route("GET", "/api/rules/{id}", "One rule.", params=(ID,),
              replies={200: Reply("The rule.", RULE), 404: NOT_FOUND})
async def get_rule(request: Request) -> Response:
    ctx = context(request)
    value = await read(ctx, provider(ctx, SETTINGS))
    return JSONResponse(_find(value, request.path_params["id"]))


async def _replace(request: Request, make: Callable[[dict[str, Any]], dict[str, Any]]
                   ) -> Response:
    rule_id = request.path_params["id"]

    def replace(rules: list[Any], configured: list[Any]) -> str:
        n = _index(rules, configured, rule_id)
        rules[n] = {"name": rule_id, **make(rules[n])}  # (a rule keeps its name if it lost it)
        return str(rules[n]["name"])

    name, new = await _change(request, replace)
    return JSONResponse(_find(new, name))


@routes.route("PUT", "/api/rules/{id}", "Replace a rule (without `name`, it keeps its own).",
              params=(ID,), body=RULE, body_required=True,
              replies={200: Reply("The rule.", RULE), 400: INVALID, 404: NOT_FOUND,
                       409: READ_ONLY})
async def put_rule(request: Request) -> Response:
    rule = _body_rule(await read_json(request), request.path_params["id"])
    return await _replace(request, lambda old: rule)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


@routes.route("PATCH", "/api/rules/{id}", "Change some of a rule's keys (a JSON merge patch: "
              "`null` removes a key), e.g. `{\"enabled\": false}`.", params=(ID,), body=RULE,
              body_required=True,
              replies={200: Reply("The rule.", RULE), 400: INVALID, 404: NOT_FOUND,
                       409: READ_ONLY})
async def patch_rule(request: Request) -> Response:
    patch = _body_rule(await read_json(request))
    return await _replace(request, lambda old: merge_patch(old, patch))


@routes.route("POST", "/api/rules/{id}/toggle", "Switch a rule on or off.", params=(ID,),
              replies={200: Reply("The rule.", RULE), 404: NOT_FOUND, 409: READ_ONLY})
async def toggle_rule(request: Request) -> Response:
    return await _replace(request, lambda old: {**old, "enabled": not old.get("enabled", True)})


@routes.route("DELETE", "/api/rules/{id}", "Delete a rule.", params=(ID,),
              replies={200: Reply("Deleted.", obj({"deleted": {"type": "string"}})),
                       404: NOT_FOUND, 409: READ_ONLY})
async def delete_rule(request: Request) -> Response:
    rule_id = request.path_params["id"]

    def delete(rules: list[Any], configured: list[Any]) -> None:
        del rules[_index(rules, configured, rule_id)]

    await _change(request, delete)
    return JSONResponse({"deleted": rule_id})
