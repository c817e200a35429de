"""``/api/settings``: the plugins' live settings (rules, network profile, pass-through hosts).

Each group comes from a plugin's ``on_settings`` hook as a
:class:`~nectoproxy.settings.SettingsProvider`; this module knows none of them. A change is
``put`` by the provider (validated, written to the file every worker process watches, applied)
and announced on the event socket as ``{"type": "settings", "name": ...}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nectoproxy.settings import SettingsError, SettingsProvider, SettingsRegistry
from nectoproxy.web.common import (
    ApiError,
    Reply,
    Routes,
    WebContext,
    context,
    path_param,
    read_json,
)
from nectoproxy.web.schemas import obj, ref

log = logging.getLogger("nectoproxy.web")
routes = Routes("settings")

#: How to get the settings of the bundled plugins when they are not there.
HINTS = {
    "rules": "the rules plugin is not installed or not enabled: `pip install "
             "nectoproxy-plugin-rules`, then add a [plugins.rules] table to nectoproxy.toml (an "
             "empty one will do: the rules are then kept in $NECTOPROXY_HOME/rules.toml) and "
             "restart; it must not be disabled, and not have reload = false",
    "throttle": "the throttle plugin is not installed or not enabled: `pip install "
                "nectoproxy-plugin-throttle`, then add a [plugins.throttle] table to "
                "nectoproxy.toml (an empty one will do) and restart",
    "passthrough": "the built-in passthrough plugin is disabled: take it out of [plugins] "
                   "disable (or --disable, NECTOPROXY_DISABLE_PLUGINS) and restart",
}

NAME = path_param("name", "The settings' name (see GET /api/settings).")
VALUE = {"description": "The settings' value: see its schema in GET /api/settings."}
SETTINGS_LIST = obj({
    "settings": {"type": "array", "items": obj({
        "name": {"type": "string"}, "title": {"type": "string"},
        "description": {"type": "string"}, "schema": {"type": "object"}, "value": VALUE})},
    "unavailable": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Settings of bundled plugins that are not active, with "
                    "how to enable them."},
})
INVALID = Reply("A refused value: `error` names the field, `field` is where it is "
                "(`rules[2]`, `hosts[0]`); nothing changed.", ref("Error"))
MISSING = Reply("No such settings (the error says how to enable a bundled plugin's).",
                ref("Error"))


def registry(ctx: WebContext) -> SettingsRegistry:
    return ctx.settings if ctx.settings is not None else SettingsRegistry()


def provider(ctx: WebContext, name: str) -> SettingsProvider:
    found = registry(ctx).get(name)
    if found is None:
        hint = HINTS.get(name)
        raise ApiError(404, f"no settings {name!r}: {hint}" if hint else
                       f"no settings {name!r} (known: {', '.join(registry(ctx).providers)})")
    return found


def _failed(found: SettingsProvider, doing: str, exc: Exception) -> ApiError:
    """A provider that raised what it should not: reported, and a JSON 500."""
    log.error("the %s settings failed to %s: %s: %s", found.name, doing, type(exc).__name__,
              exc, exc_info=exc)
    return ApiError(500, f"the {found.name} settings failed to {doing}: "
                         f"{type(exc).__name__}: {exc}")


async def read(ctx: WebContext, found: SettingsProvider) -> Any:
    try:
        return await ctx.run(found.get)
    except OSError as exc:
        raise ApiError(503, f"cannot read the {found.name} settings: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not be a bare 500
        raise _failed(found, "read", exc) from None


async def write(ctx: WebContext, found: SettingsProvider, value: Any) -> Any:
    """``put`` ``value`` (the caller holds the registry's lock for the name); 400 for a
    refused value, the change announced otherwise."""
    try:
        new = await ctx.run(found.put, value)
    except SettingsError as exc:
        extra = {"field": exc.field} if exc.field else {}
        raise ApiError(400, exc.message, **extra) from None
    except OSError as exc:
        raise ApiError(503, f"cannot save the {found.name} settings: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not be a bare 500
        raise _failed(found, "save", exc) from None
    registry(ctx).changed(found.name)
    return new


async def update(ctx: WebContext, name: str, change: Callable[[Any], Any]) -> Any:
    """Read, ``change`` (returns the value to put), write: one at a time per name."""
    found = provider(ctx, name)
    async with registry(ctx).lock(name):
        return await write(ctx, found, change(await read(ctx, found)))


@routes.route("GET", "/api/settings", "Every live setting the active plugins offer, with its "
              "JSON schema and value.", replies={200: Reply("The settings.", SETTINGS_LIST)})
async def list_settings(request: Request) -> Response:
    ctx = context(request)
    entries = []
    for found in registry(ctx).providers.values():
        entries.append({"name": found.name, "title": found.title,
                        "description": found.description, "schema": dict(found.schema),
                        "value": await read(ctx, found)})
    unavailable = {name: hint for name, hint in HINTS.items()
                   if name not in registry(ctx).providers}
    return JSONResponse({"settings": entries, "unavailable": unavailable})


@routes.route("GET", "/api/settings/{name}", "One group of settings' value.", params=(NAME,),
              replies={200: Reply("The value.", VALUE), 404: MISSING})
async def get_settings(request: Request) -> Response:
    ctx = context(request)
    return JSONResponse(await read(ctx, provider(ctx, request.path_params["name"])))


@routes.route("PUT", "/api/settings/{name}", "Replace one group of settings: checked, saved "
              "(surviving a restart) and applied in every worker process within a second.",
              params=(NAME,), body=VALUE, body_required=True,
              replies={200: Reply("The new value.", VALUE), 400: INVALID, 404: MISSING})
async def put_settings(request: Request) -> Response:
    ctx = context(request)
    name = request.path_params["name"]
    found = provider(ctx, name)
    value = await read_json(request)
    async with registry(ctx).lock(name):
        return JSONResponse(await write(ctx, found, value))
