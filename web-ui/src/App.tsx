// The inspector's page: the filter bar, the live traffic list, the detail of the selected flow,
// the sessions panel, the live configuration (rules, network profile, pass-through hosts), the
// breakpoints with their paused flows, and the status bar. State lives here; the network in api.ts and
// events.ts; the list's rows in a RowCache.
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { breakpointsApi } from "./breakpoints";
import { BreakpointsPanel } from "./components/BreakpointsPanel";
import { api, ApiError, bodyUrl, fetchBodyPrefix, harSessionUrl, type FlowRecord, type FlowSummary, type ReplayEdit, type Session, type Status } from "./api";
import { bodyKind } from "./bodyKind";
import { loadColumns, saveColumns, SORT_FIELDS, type ColumnState } from "./columns";
import { CaptureControls } from "./components/CaptureControls";
import { FilterBar } from "./components/FilterBar";
import { DetailPane } from "./components/DetailPane";
import { CompareView } from "./components/CompareView";
import { BLANK, draftOf, ExportText, RequestEditor, Shortcuts, type Draft } from "./components/Modals";
import { RulesPanel } from "./components/RulesPanel";
import { SessionsPanel } from "./components/SessionsPanel";
import { StatusBar } from "./components/StatusBar";
import { TrafficList } from "./components/TrafficList";
import { EventSocket, type EventMessage } from "./events";
import { addTerm, quickFilter } from "./filterError";
import { RateMeter } from "./rate";
import { RowCache } from "./rowCache";
import { applyTheme, FILTER_KEY, loadTheme, type Theme } from "./theme";

type Dialog =
  | { kind: "shortcuts" }
  | { kind: "export"; title: string; text: string }
  | { kind: "edit"; flow: FlowRecord; draft: Draft }
  | { kind: "compose"; draft: Draft }
  | { kind: "compare"; ids: [string, string] };

interface ListError { message: string; position: number | null; parameter: string | null }

/** What the list shows until the viewed session is known: nothing (closed: it takes no events). */
const EMPTY_CACHE = new RowCache(async () => ({ entries: [], next: null }), 0, true);
EMPTY_CACHE.close();

function useCacheVersion(cache: RowCache): number {
  return useSyncExternalStore(useCallback((listener) => cache.subscribe(listener), [cache]), () => cache.version);
}

function isTyping(target: EventTarget | null): boolean {
  const element = target as HTMLElement | null;
  return !!element && (element.tagName === "INPUT" || element.tagName === "TEXTAREA" || element.tagName === "SELECT" || element.isContentEditable);
}

function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function App() {
  const [sessions, setSessions] = useState<Session[]>([]);
  const [viewId, setViewId] = useState<number | null>(null);
  const [filter, setFilterState] = useState(() => localStorage.getItem(FILTER_KEY) ?? "");
  const [search, setSearch] = useState("");
  const [reload, setReload] = useState(0);
  const [cache, setCache] = useState<RowCache>(EMPTY_CACHE);
  const [listError, setListError] = useState<ListError | null>(null);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [focus, setFocus] = useState<number | null>(null);
  const [anchor, setAnchor] = useState<number | null>(null);
  const [detail, setDetail] = useState<FlowSummary | null>(null);
  const [showSessions, setShowSessions] = useState(false);
  const [showLive, setShowLive] = useState(false);
  // -- breakpoints: the panel, and the flows paused now (from the event socket) --
  const [showBreakpoints, setShowBreakpoints] = useState(false);
  const [pausedIds, setPausedIds] = useState<ReadonlySet<string>>(new Set());
  const [breakpointsVersion, setBreakpointsVersion] = useState(0);
  /** Changes when the event socket says live settings changed: the live view reads them again. */
  const [settingsVersion, setSettingsVersion] = useState(0);
  const [dialog, setDialog] = useState<Dialog | null>(null);
  const [toast, setToast] = useState<string | null>(null);
  const [status, setStatus] = useState<Status | null>(null);
  const [connected, setConnected] = useState(false);
  const [rate, setRate] = useState(0);
  const [theme, setTheme] = useState<Theme>(loadTheme);
  const [dragging, setDragging] = useState(false);
  const [scrollRequest, setScrollRequest] = useState<{ index: number; nonce: number } | null>(null);
  const [columns, setColumnsState] = useState<ColumnState>(() => loadColumns());
  const setColumns = useCallback((next: ColumnState) => {
    saveColumns(next);
    setColumnsState(next);
  }, []);
  const sort = columns.sort;
  const filterInput = useRef<HTMLInputElement>(null);
  /** The cache events go to (the one loading, else the one shown), and the one shown. */
  const cacheRef = useRef<RowCache>(EMPTY_CACHE);
  const shownRef = useRef<RowCache>(EMPTY_CACHE);
  const socketRef = useRef<EventSocket | null>(null);
  const meter = useMemo(() => new RateMeter(), []);
  const lastSeq = useRef(0);
  const viewRef = useRef<number | null>(null);
  const version = useCacheVersion(cache);

  const notify = useCallback((message: string) => setToast(message), []);
  useEffect(() => {
    if (!toast) return;
    const timer = window.setTimeout(() => setToast(null), 5000);
    return () => window.clearTimeout(timer);
  }, [toast]);

  useEffect(() => applyTheme(theme), [theme]);

  const setFilter = useCallback((value: string) => {
    localStorage.setItem(FILTER_KEY, value);
    setFilterState(value);
  }, []);

  // -- the event socket and the sessions --------------------------------------------------
  const refreshSessions = useCallback(async () => {
    try {
      const list = (await api.sessions()).sessions;
      setSessions(list);
      setViewId((current) => current ?? list.find((s) => s.active)?.id ?? null);
    } catch (err) {
      notify(`Could not read the sessions: ${err instanceof Error ? err.message : err}`);
    }
  }, [notify]);

  /** The paused flows' ids from the API (the events keep them up to date from there on). */
  const syncPaused = useCallback(async () => {
    try {
      setPausedIds(new Set((await breakpointsApi.paused()).paused.map((p) => p.id)));
    } catch {
      // no breakpoints in this run: nothing is paused
    }
  }, []);

  useEffect(() => {
    void refreshSessions();
    void syncPaused();
    const socket = new EventSocket(null, {
      connected: setConnected,
      message: (message: EventMessage) => {
        if (message.type === "sessions") {
          setSessions(message.sessions);
          setViewId((current) => (current !== null && message.sessions.some((s) => s.id === current)
            ? current : message.sessions.find((s) => s.active)?.id ?? null));
        } else if (message.type === "flows") {
          const seen = lastSeq.current;
          let fresh = 0;
          for (const flow of message.flows) {
            if (flow.seq > seen) fresh += 1;  // new; the others are updates of flows seen
            lastSeq.current = Math.max(lastSeq.current, flow.seq);
          }
          meter.add(fresh, performance.now());
          cacheRef.current.live(message.flows.filter((flow) => flow.sessionId === viewRef.current));
          if (message.deleted.length) cacheRef.current.remove(message.deleted);
          setDetail((current) => current && (message.flows.find((f) => f.id === current.id) ?? current));
        } else if (message.type === "settings") {
          setSettingsVersion((n) => n + 1);
        } else if (message.type === "breakpoint:hit" || message.type === "breakpoint:resumed") {
          const hit = message.type === "breakpoint:hit";
          const id = hit ? message.flow.id : message.id;
          setPausedIds((current) => {
            const next = new Set(current);
            if (hit) next.add(id);
            else next.delete(id);
            return next;
          });
          setBreakpointsVersion((n) => n + 1);
          if (hit) setToast(`Paused at a breakpoint: ${message.flow.request.method} ${message.flow.request.url} (Shift+B opens the breakpoints)`);
        } else if (message.type === "reset") {
          setReload((n) => n + 1);
          void syncPaused();  // (announcements may have been missed while disconnected)
        }
      },
    });
    socketRef.current = socket;
    return () => socket.close();
  }, [meter, refreshSessions, syncPaused]);

  useEffect(() => {
    viewRef.current = viewId;
    socketRef.current?.subscribe(viewId);
    setDetail(null);
    setSelected(new Set());
  }, [viewId]);

  useEffect(() => {
    const tick = async () => {
      setRate(meter.rate(performance.now()));
    };
    const poll = async () => {
      try {
        setStatus(await api.status());
      } catch {
        // shown as "…" until the next poll
      }
    };
    void poll();
    const rateTimer = window.setInterval(tick, 1000);
    const statusTimer = window.setInterval(poll, 3000);
    return () => { window.clearInterval(rateTimer); window.clearInterval(statusTimer); };
  }, [meter]);

  // -- the list ----------------------------------------------------------------------------
  useEffect(() => {
    if (viewId === null) return;
    let cancelled = false;
    const query = { sessionId: viewId, filter, search, sort };
    const field = sort ? SORT_FIELDS[sort.key] : null;
    const sortCursor = field ? (flow: FlowSummary) => JSON.stringify([flow[field], flow.seq]) : null;
    setListError(null);
    (async () => {
      try {
        const base = search.trim() ? null : (await api.stats(viewId, filter)).total;
        if (cancelled) return;
        const next = new RowCache((request) => api.traffic(query, request), base, !filter.trim() && !search.trim(), undefined, sortCursor);
        cacheRef.current = next;  // events queue in it while its first pages load
        const abandon = () => {
          next.close();
          if (cacheRef.current === next) cacheRef.current = shownRef.current;
        };
        try {
          await next.start();
        } catch (err) {
          abandon();
          throw err;
        }
        if (cancelled) {
          abandon();
          return;
        }
        shownRef.current.close();
        shownRef.current = next;
        setCache(next);
      } catch (err) {
        if (cancelled) return;
        if (err instanceof ApiError) setListError({ message: err.message, position: err.position, parameter: err.parameter });
        else setListError({ message: String(err), position: null, parameter: null });
      }
    })();
    return () => { cancelled = true; };
  // (columns.sort keeps its identity when columns are resized or hidden: no reload then)
  }, [viewId, filter, search, reload, sort]);

  useEffect(() => {
    setFocus(null);
    setAnchor(null);
  }, [cache]);

  const lastReload = useRef(0);
  useEffect(() => {
    if (!cache.inconsistent || performance.now() - lastReload.current < 3000) return;
    lastReload.current = performance.now();
    setReload((n) => n + 1);  // the count and the pages disagree: start over
  }, [cache, version]);

  const count = cache.count();
  const rowAt = useCallback((index: number) => cache.rowAt(count - 1 - index), [cache, count]);

  const onSelect = useCallback((index: number, flow: FlowSummary, event: { shift: boolean; toggle: boolean }) => {
    setFocus(index);
    if (event.shift && anchor !== null) {
      const ids = new Set<string>();
      for (let i = Math.min(anchor, index); i <= Math.max(anchor, index); i += 1) {
        const row = rowAt(i);
        if (row) ids.add(row.id);
      }
      setSelected(ids);
      return;
    }
    setAnchor(index);
    if (event.toggle) {
      setSelected((current) => {
        const next = new Set(current);
        if (next.has(flow.id)) next.delete(flow.id);
        else next.add(flow.id);
        return next;
      });
      return;
    }
    setSelected(new Set([flow.id]));
    setDetail(flow);
  }, [anchor, rowAt]);

  const moveTo = useCallback((index: number, open: boolean) => {
    if (count === 0) return;
    const target = Math.max(0, Math.min(count - 1, index));
    setFocus(target);
    setAnchor(target);
    setScrollRequest({ index: target, nonce: Math.random() });
    const row = rowAt(target);
    if (row) {
      setSelected(new Set([row.id]));
      if (open || detail) setDetail(row);
    }
  }, [count, rowAt, detail]);

  const onQuickFilter = useCallback((field: "host" | "status", value: string) => {
    if (value) setFilter(addTerm(filter, quickFilter(field, value)));
  }, [filter, setFilter]);

  // -- actions -----------------------------------------------------------------------------
  const replay = useCallback(async (flow: FlowSummary, edit?: ReplayEdit) => {
    try {
      const result = await api.replay(flow.id, edit);
      notify(result.error ? `Replayed: ${result.error}` : `Replayed: ${result.status ?? "no status"}`);
    } catch (err) {
      notify(`Replay failed: ${err instanceof Error ? err.message : err}`);
    }
  }, [notify]);

  /** The request editor on ``flow``: to edit and replay it, or to compose a new request. */
  const openEditor = useCallback(async (flow: FlowRecord, purpose: "edit" | "compose" = "edit") => {
    let body: string | null = flow.requestStored === 0 ? "" : null;
    if (flow.requestStored > 0 && !flow.requestTruncated && flow.requestStored <= 1024 * 1024) {
      try {
        const prefix = await fetchBodyPrefix(bodyUrl(flow.id, "request", !!flow.requestBodyEncoding), 1024 * 1024);
        const kind = bodyKind(null, prefix.bytes);
        if (kind === "text" || kind === "json") body = new TextDecoder().decode(prefix.bytes);
      } catch {
        body = null;
      }
    }
    const note = purpose === "edit" ? "(the recorded body is binary or large: it is sent as recorded unless you type one)"
      : "(the recorded body is binary or large: it is not copied; type one to send a body)";
    const draft = draftOf(flow, body, note);
    setDialog(purpose === "edit" ? { kind: "edit", flow, draft } : { kind: "compose", draft });
  }, []);

  // -- compose and compare (a new request through the proxy; two flows side by side) ----------
  /** Errors reach the editor, which shows them; the new flow is selected and opened. */
  const compose = useCallback(async (request: ReplayEdit) => {
    const result = await api.compose(request);
    notify(result.error ? `Sent: ${result.error}` : `Sent: ${result.status ?? "no status"}`);
    setDialog(null);
    setSelected(new Set([result.id]));
    if (result.flow) setDetail(result.flow);
  }, [notify]);

  const exportAs = useCallback(async (flow: FlowSummary, format: "curl" | "httpie" | "raw") => {
    try {
      const text = await api.exportText(flow.id, format);
      setDialog({ kind: "export", title: `Copy as ${format}`, text });
      try {
        await navigator.clipboard.writeText(text);
        notify(`Copied as ${format}`);
      } catch {
        // the dialog shows the text to copy by hand
      }
    } catch (err) {
      notify(`Export failed: ${err instanceof Error ? err.message : err}`);
    }
  }, [notify]);

  const exportSelection = useCallback(async () => {
    try {
      saveBlob(await api.harOfSelection([...selected]), `selection-${selected.size}.har`);
    } catch (err) {
      notify(`HAR export failed: ${err instanceof Error ? err.message : err}`);
    }
  }, [selected, notify]);

  const importHar = useCallback(async (file: File) => {
    try {
      const session = await api.importHar(file);
      notify(`Imported ${file.name} as "${session.name}"`);
      await refreshSessions();
      setViewId(session.id);
    } catch (err) {
      notify(`HAR import failed: ${err instanceof Error ? err.message : err}`);
    }
  }, [notify, refreshSessions]);

  const mark = useCallback(async (flow: FlowSummary) => {
    try {
      await api.annotate(flow.id, { mark: flow.mark ? null : "red" });
    } catch (err) {
      notify(`Could not mark: ${err instanceof Error ? err.message : err}`);
    }
  }, [notify]);

  // -- keyboard ----------------------------------------------------------------------------
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") {
        if (dialog) setDialog(null);
        else if (showBreakpoints && isTyping(event.target)) (event.target as HTMLElement).blur();
        else if (showBreakpoints) setShowBreakpoints(false);
        else if (showLive && isTyping(event.target)) (event.target as HTMLElement).blur();
        else if (showLive) setShowLive(false);
        else if (detail) setDetail(null);
        else if (isTyping(event.target)) (event.target as HTMLElement).blur();
        else setSelected(new Set());
        return;
      }
      if (dialog || isTyping(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "R") {
        setShowLive((shown) => !shown);
        setShowBreakpoints(false);
        event.preventDefault();
        return;
      }
      if (event.key === "B") {
        setShowBreakpoints((shown) => !shown);
        setShowLive(false);
        event.preventDefault();
        return;
      }
      if ((showLive || showBreakpoints) && event.key !== "?") return;  // the list's keys, for a list not shown
      const current = focus ?? (count ? count - 1 : 0);
      const focused = focus !== null ? rowAt(focus) : undefined;
      switch (event.key) {
        case "j": case "ArrowDown": moveTo(focus === null ? count - 1 : current + 1, false); break;
        case "k": case "ArrowUp": moveTo(focus === null ? count - 1 : current - 1, false); break;
        case "Home": moveTo(0, false); break;
        case "End": moveTo(count - 1, false); break;
        case "PageDown": moveTo(current + 20, false); break;
        case "PageUp": moveTo(current - 20, false); break;
        case "Enter":
          if ((event.target as HTMLElement | null)?.closest("button, a")) return;
          if (focused) setDetail(focused);
          break;
        case "/": filterInput.current?.focus(); break;
        case "?": setDialog({ kind: "shortcuts" }); break;
        case "r": if (focused) void replay(focused); break;
        case "e": if (focused) void api.flow(focused.id).then(openEditor, () => undefined); break;
        case "n": setDialog({ kind: "compose", draft: BLANK }); break;
        case "m": if (focused) void mark(focused); break;
        default: return;
      }
      event.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [dialog, detail, showLive, showBreakpoints, focus, count, rowAt, moveTo, replay, openEditor, mark]);

  // -- drag and drop of HAR files --------------------------------------------------------------
  useEffect(() => {
    const over = (event: DragEvent) => {
      if (!event.dataTransfer?.types.includes("Files")) return;
      event.preventDefault();
      setDragging(true);
    };
    const leave = (event: DragEvent) => { if (!event.relatedTarget) setDragging(false); };
    const drop = (event: DragEvent) => {
      event.preventDefault();
      setDragging(false);
      const file = event.dataTransfer?.files[0];
      if (file) void importHar(file);
    };
    window.addEventListener("dragover", over);
    window.addEventListener("dragleave", leave);
    window.addEventListener("drop", drop);
    return () => { window.removeEventListener("dragover", over); window.removeEventListener("dragleave", leave); window.removeEventListener("drop", drop); };
  }, [importHar]);

  const viewed = sessions.find((s) => s.id === viewId);
  return (
    <div className={`app${detail ? " with-detail" : ""}${showSessions ? " with-sessions" : ""}`}>
      <header className="toolbar">
        <span className="brand">NectoProxy</span>
        <button className={showSessions ? "active" : ""} onClick={() => setShowSessions(!showSessions)} aria-pressed={showSessions}
          title="Sessions">{viewed ? viewed.name : "Sessions"}{viewed && !viewed.active ? " (not active)" : ""}</button>
        <FilterBar ref={filterInput} filter={filter} search={search} error={listError} onFilter={setFilter} onSearch={setSearch}
          sessionId={viewId} />
        <CaptureControls paused={status ? !!status.paused : null} sessionId={viewId} sessionName={viewed?.name ?? ""}
          onPaused={(paused) => setStatus((current) => current && { ...current, paused, capturing: !paused })}
          onCleared={() => setReload((n) => n + 1)} onNotify={notify} />
        {viewId !== null && <a className="button" href={harSessionUrl(viewId, filter)} download>Export HAR</a>}
        {selected.size > 0 && <button onClick={() => void exportSelection()}>HAR of {selected.size} selected</button>}
        {selected.size === 2 && <button onClick={() => setDialog({ kind: "compare", ids: [...selected] as [string, string] })}>Compare</button>}
        <button onClick={() => setDialog({ kind: "compose", draft: BLANK })} title="Compose a new request (n)">Compose</button>
        <label className="button" title="Or drop a .har file anywhere">Import HAR
          <input type="file" accept=".har,application/json" hidden onChange={(e) => {
            const file = e.target.files?.[0];
            e.target.value = "";
            if (file) void importHar(file);
          }} /></label>
        <button className={showBreakpoints ? "active" : pausedIds.size ? "paused-alert" : ""} aria-pressed={showBreakpoints}
          onClick={() => { setShowBreakpoints(!showBreakpoints); setShowLive(false); }}
          title="Breakpoints and the flows paused at them (Shift+B)">Breakpoints{pausedIds.size ? ` (${pausedIds.size} paused)` : ""}</button>
        <button className={showLive ? "active" : ""} onClick={() => { setShowLive(!showLive); setShowBreakpoints(false); }} aria-pressed={showLive}
          title="Rules, network profile and pass-through hosts (Shift+R)">Rules</button>
        <button className="ghost" onClick={() => setDialog({ kind: "shortcuts" })} title="Keyboard shortcuts (?)">?</button>
      </header>
      <main className="main">
        {showSessions && (
          <SessionsPanel sessions={sessions} viewed={viewId} onView={setViewId} onNotify={notify} onChanged={() => void refreshSessions()} />
        )}
        {showLive && <RulesPanel version={settingsVersion} onNotify={notify} onClose={() => setShowLive(false)} />}
        {showBreakpoints && <BreakpointsPanel version={breakpointsVersion + settingsVersion} filter={filter} onNotify={notify}
          onClose={() => setShowBreakpoints(false)} />}
        {!showLive && !showBreakpoints && <TrafficList cache={cache} version={version} selected={selected} focus={focus} onSelect={onSelect}
          onOpen={(index) => { const row = rowAt(index); if (row) setDetail(row); }} onQuickFilter={onQuickFilter} scrollRequest={scrollRequest}
          columns={columns} onColumns={setColumns} compact={!!detail} onShowNew={() => setReload((n) => n + 1)} />}
        {detail && !showLive && !showBreakpoints && (
          <DetailPane summary={detail} onClose={() => setDetail(null)} onReplay={(flow) => void replay(flow)}
            onEdit={(flow) => void openEditor(flow)} onCompose={(flow) => void openEditor(flow, "compose")} onExport={(flow, format) => void exportAs(flow, format)}
            onQuickFilter={onQuickFilter} onNotify={notify} />
        )}
      </main>
      <StatusBar status={status} connected={connected} rate={rate} shown={count} countKnown={cache.countKnown()}
        loaded={cache.loadedRows()} theme={theme} onTheme={setTheme} />
      {dialog?.kind === "shortcuts" && <Shortcuts onClose={() => setDialog(null)} />}
      {dialog?.kind === "export" && <ExportText title={dialog.title} text={dialog.text} onClose={() => setDialog(null)} />}
      {dialog?.kind === "edit" && (
        <RequestEditor title="Edit and replay" draft={dialog.draft} onClose={() => setDialog(null)}
          onSend={async (edit) => { await replay(dialog.flow, edit); setDialog(null); }} />
      )}
      {dialog?.kind === "compose" && <RequestEditor title="Compose a request" draft={dialog.draft} onClose={() => setDialog(null)} onSend={compose} />}
      {dialog?.kind === "compare" && <CompareView ids={dialog.ids} onClose={() => setDialog(null)} />}
      {dragging && <div className="drop-zone">Drop a HAR file to import it as a new session</div>}
      {toast && <div className="toast" role="status">{toast}</div>}
    </div>
  );
}
