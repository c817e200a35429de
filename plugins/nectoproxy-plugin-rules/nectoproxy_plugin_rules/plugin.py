"""The rules plugin: matches each flow against the rules and applies their actions.

Every rule is matched against the request as the client sent it; the actions of the matching
rules are applied in rule order (priority, then file order), so their changes accumulate and a
later rule's change to the same header wins. A rule that answers (mock, block, map_local) ends
the list for that flow.

Matching starts in ``on_request_headers``, before the request body is read; it stops at the
first rule that needs the body (``body_contains``) and goes on from there in ``on_request``.
So a request answered by a rule that needs no body is answered before its body is read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from weakref import WeakKeyDictionary

import anyio

from nectoproxy import Config, Flow, Request, hookimpl
from nectoproxy.settings import LiveFile, SettingsProvider
from nectoproxy_plugin_rules import actions
from nectoproxy_plugin_rules.loading import (
    DEFAULT_FILE,
    HEADER,
    combine,
    load_file,
    parse_options,
)
from nectoproxy_plugin_rules.model import RequestView, Rule, RuleSet

log = logging.getLogger("nectoproxy.rules")


@dataclass
class _FlowState:
    """What one flow has gone through so far (kept beside the flow, not on the wire)."""

    rules: RuleSet  # the rules in force when the flow started, even if a reload happens
    view: RequestView
    next: int = 0  # index of the first rule not looked at yet
    matched: list[Rule] = field(default_factory=list)
    body_pending: list[Rule] = field(default_factory=list)  # request body changes to make


def _view(request: Request) -> RequestView:
    return RequestView(request.method.upper(), request.url, request.host, request.pathname,
                       request.headers.copy())


class RulesPlugin:
    """The ``rules`` plugin (one instance per proxy)."""

    name = "rules"

    def __init__(self) -> None:
        self.rules = RuleSet()
        self.file: Path | None = None
        #: The file is the default one (``$NECTOPROXY_HOME/rules.toml``): it may not exist yet.
        self.default_file = False
        self.inline: list[Rule] = []
        #: The ``[[plugins.rules.rule]]`` tables as written (the inspector shows them).
        self.inline_tables: list[Any] = []
        self.reload = True
        #: The rules file, watched (None without one, or with ``reload = false``).
        self.live: LiveFile[RuleSet] | None = None
        self.config: Config | None = None
        self._flows: WeakKeyDictionary[Flow, _FlowState] = WeakKeyDictionary()

    # -- configuration and reloading ---------------------------------------------------------

    @hookimpl
    def on_configure(self, config: Config, options: Mapping[str, Any]
                     ) -> Literal[False] | set[str] | None:
        """Read ``[plugins.rules]`` (and its rules file); without a table, switch off.

        A table without ``file`` (even an empty one) keeps the rules file in
        ``$NECTOPROXY_HOME/rules.toml``, where the inspector saves rules.
        """
        settings = parse_options(options, config)
        self.file, self.default_file = settings.file, False
        if self.file is None and (settings.inline or self.name in config.plugin_options):
            self.file, self.default_file = config.home_dir / DEFAULT_FILE, True
        if not settings.inline and self.file is None:
            return False
        self.inline, self.reload = settings.inline, settings.reload
        self.config = config
        self.inline_tables = list(options.get("rule", []))
        self.live = None
        if self.file is not None and self.reload:  # (before reading: a change meanwhile is seen)
            self.live = LiveFile(self.file, self._read, self._apply, what="rules", logger=log,
                                 header=HEADER)
        self.rules = self._read(self.file) if self.file is not None else combine(self.inline, [])
        log.info("rules: %d in force%s", len(self.rules.rules),
                 f" ({self.file}{', reloaded when it changes' if self.reload else ''})"
                 if self.file else "")
        if self.file is not None and self.reload:
            return None  # a reload may bring rules that need any hook
        # Keep only the hooks these rules need: an on_request/on_response that is not needed
        # would make every body buffer for nothing.
        keep = {"on_request_headers"}
        if any(r.needs_request_body or r.modify_request is not None for r in self.rules.rules):
            keep.add("on_request")
        if any(r.modify_response is not None or r.throttle is not None
               for r in self.rules.rules):
            keep.add("on_response")
        return keep

    @hookimpl
    def on_settings(self) -> list[SettingsProvider]:
        """The rules file's rules, for the inspector (not with ``reload = false``: the other
        worker processes would never see a change)."""
        if self.file is None or not self.reload:
            return []
        from nectoproxy_plugin_rules.live import RulesSettings

        return [RulesSettings(self)]

    def _read(self, path: Path) -> RuleSet:
        """The rules in force with this version of the rules file; ConfigError names it."""
        return combine(self.inline, load_file(path, missing_ok=self.default_file))

    def _apply(self, rules: RuleSet) -> None:
        """Put ``rules`` in force: the rules file as reloaded, or as just saved here."""
        self.rules = rules
        log.info("rules: %d in force", len(rules.rules))

    # -- flows -------------------------------------------------------------------------------

    @hookimpl
    async def on_request_headers(self, flow: Flow) -> None:
        if self.live is not None:  # (reloads the file if it changed; a broken one is reported)
            await self.live.refresh()
        if not self.rules.rules:
            return
        state = _FlowState(self.rules, _view(flow.request))
        self._flows[flow] = state
        await self._advance(flow, state, None, body_ready=False)

    @hookimpl
    async def on_request(self, flow: Flow) -> None:
        state = self._flows.get(flow)
        if state is None:
            return
        body = None
        if state.next < len(state.rules.rules):  # the walk paused at a rule with body_contains
            try:
                body = flow.request.content  # as the client sent it, before any change
            except ValueError:  # an undecodable Content-Encoding: body_contains cannot match
                body = None
        for rule in state.body_pending:
            assert rule.modify_request is not None
            actions.modify_body(flow.request, rule.modify_request, rule)
        state.body_pending.clear()
        await self._advance(flow, state, body, body_ready=True)

    @hookimpl
    async def on_response(self, flow: Flow) -> None:
        state = self._flows.pop(flow, None)
        response = flow.response
        if state is None or response is None:
            return
        for rule in state.matched:
            if rule.modify_response is not None:
                actions.modify_head(response, rule.modify_response)
                actions.modify_body(response, rule.modify_response, rule)
            if rule.throttle is not None:
                if rule.throttle.latency_ms:
                    await anyio.sleep(rule.throttle.latency_ms / 1000)
                if not response.chunk_filters:
                    response.filters_keep_length = True  # pacing keeps the size: keep its length
                response.chunk_filters.append(actions.Pacer(rule.throttle.bytes_per_second))

    async def _advance(self, flow: Flow, state: _FlowState, body: bytes | None, *,
                       body_ready: bool) -> None:
        """Match and apply rules from ``state.next`` on, until one needs a body not read yet
        or one answers."""
        rules = state.rules.rules
        while state.next < len(rules):
            rule = rules[state.next]
            if rule.needs_request_body and not body_ready:
                return  # on_request carries on from here
            state.next += 1
            if not (rule.matchers.match_head(state.view) and rule.matchers.match_body(body)):
                continue
            state.matched.append(rule)
            flow.metadata.setdefault("rules", []).append(rule.name)
            await self._apply_to_request(flow, rule, state, body_ready)
            if flow.response is not None or flow.killed:
                state.next = len(rules)
                return

    async def _apply_to_request(self, flow: Flow, rule: Rule, state: _FlowState,
                                body_ready: bool) -> None:
        request = flow.request
        if rule.delay is not None:
            await anyio.sleep(actions.delay_seconds(rule.delay))
        if rule.modify_request is not None:
            actions.modify_head(request, rule.modify_request)
            if rule.modify_request.changes_body:
                if body_ready:
                    actions.modify_body(request, rule.modify_request, rule)
                else:
                    state.body_pending.append(rule)
        if rule.map_remote is not None:
            actions.remap(request, rule.map_remote)
        elif rule.block is not None:
            flow.response = actions.block_response(rule.block, rule)
        elif rule.mock is not None:
            if rule.mock.delay_ms:
                await anyio.sleep(rule.mock.delay_ms / 1000)
            flow.response = await actions.mock_response(rule.mock, rule)
        elif rule.map_local is not None:
            flow.response = await actions.local_response(rule.map_local, state.view.path)
