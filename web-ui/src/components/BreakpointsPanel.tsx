// The breakpoints view: the breakpoints (made from the list's filter, switched on and off,
// deleted) and the queue of flows paused at them, each with an editor (request: method, URL,
// headers, body; response: status, headers, body) and continue / abort / mock. Keys: Ctrl+Enter
// continues the flow shown, Ctrl+Shift+Enter aborts it (also while typing); j / k move in the
// queue. ``version`` changes when the event socket says a flow paused or went on.
import { useCallback, useEffect, useState } from "react";
import { breakpointsApi, modifications, type Action, type Breakpoint, type PausedFlow, type Phase } from "../breakpoints";
import { headersText, parseHeadersText } from "../headers";

export interface BreakpointsPanelProps {
  version: number;
  /** The traffic list's filter: a new breakpoint starts from it. */
  filter: string;
  onNotify: (message: string) => void;
  onClose: () => void;
}

function isTyping(target: EventTarget | null): boolean {
  const element = target as HTMLElement | null;
  return !!element && (element.tagName === "INPUT" || element.tagName === "TEXTAREA" || element.tagName === "SELECT");
}

export function BreakpointsPanel({ version, filter, onNotify, onClose }: BreakpointsPanelProps) {
  const [breakpoints, setBreakpoints] = useState<Breakpoint[] | null>(null);
  const [paused, setPaused] = useState<PausedFlow[]>([]);
  const [shown, setShown] = useState<string | null>(null);
  const [phase, setPhase] = useState<Phase>("request");
  const [failed, setFailed] = useState<string | null>(null);

  const reload = useCallback(async () => {
    try {
      const [list, queue] = await Promise.all([breakpointsApi.list(), breakpointsApi.paused()]);
      setBreakpoints(list.breakpoints);
      setPaused(queue.paused);
      setShown((current) => (current && queue.paused.some((p) => p.id === current) ? current : queue.paused[0]?.id ?? null));
      setFailed(list.error ?? null);
    } catch (err) {
      setFailed(err instanceof Error ? err.message : String(err));
    }
  }, []);
  useEffect(() => { void reload(); }, [reload, version]);

  const run = async (what: string, action: () => Promise<unknown>) => {
    try {
      await action();
    } catch (err) {
      onNotify(`${what} failed: ${err instanceof Error ? err.message : err}`);
    }
    await reload();
  };

  const flow = paused.find((p) => p.id === shown) ?? null;
  const move = useCallback((step: number) => {
    const at = paused.findIndex((p) => p.id === shown);
    const next = paused[Math.max(0, Math.min(paused.length - 1, at + step))];
    if (next) setShown(next.id);
  }, [paused, shown]);
  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (isTyping(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "j") move(1);
      else if (event.key === "k") move(-1);
      else return;
      event.preventDefault();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [move]);

  return (
    <section className="live-settings breakpoints" aria-label="Breakpoints" data-testid="breakpoints-panel">
      <header className="live-header">
        <strong>Breakpoints</strong>
        <span className="muted">Matching flows pause here until you continue, abort or mock them (unattended: they continue after proxy.intercept_timeout).</span>
        <button className="ghost" onClick={onClose} aria-label="Close the breakpoints">✕</button>
      </header>
      {failed && <div className="error-text pad" role="alert">{failed}</div>}
      <div className="breakpoints-body">
        <div className="breakpoints-side">
          <div className="rules-actions">
            <select aria-label="Phase of a new breakpoint" value={phase} onChange={(e) => setPhase(e.target.value as Phase)}>
              <option value="request">on request</option>
              <option value="response">on response</option>
              <option value="both">on both</option>
            </select>
            <button className="primary" title={filter.trim() ? `Pause flows matching: ${filter}` : "Pause every flow"}
              onClick={() => void run("Adding the breakpoint", () => breakpointsApi.create({ filter, phase }))}>
              Add from the filter</button>
          </div>
          {breakpoints?.length === 0 && <p className="muted pad">No breakpoints. Type a filter in the bar above, then add it.</p>}
          <ol className="rules" data-testid="breakpoints">
            {breakpoints?.map((b) => (
              <li key={b.id} data-breakpoint={b.id} className={`rule-item${b.enabled ? "" : " disabled"}`}>
                <span className="rule-summary">
                  <span className="rule-match" title={b.filter}>{b.filter || "(every flow)"}</span>
                  <span className="rule-kind">{b.phase}</span>
                </span>
                <label className="switch" title={b.enabled ? "On: switch it off" : "Off: switch it on"}>
                  <input type="checkbox" role="switch" aria-label={`Enabled: ${b.filter || "every flow"}`} checked={b.enabled}
                    onChange={() => void run("Switching", () => breakpointsApi.patch(b.id, { enabled: !b.enabled }))} />
                </label>
                <button className="danger" onClick={() => void run("Deleting", () => breakpointsApi.remove(b.id))}>Delete</button>
              </li>
            ))}
          </ol>
          <h3 className="small-title">Paused ({paused.length})</h3>
          {paused.length === 0 && <p className="muted pad">No flow is paused.</p>}
          <ol className="paused-queue" data-testid="paused-queue">
            {paused.map((p) => (
              <li key={p.id}>
                <button className={p.id === shown ? "active" : ""} onClick={() => setShown(p.id)} data-paused={p.id}>
                  <span className="rule-kind">{p.phase}</span> {p.request.method} {p.request.url}
                </button>
              </li>
            ))}
          </ol>
        </div>
        {flow && <PausedEditor key={`${flow.id}/${flow.phase}`} flow={flow}
          onResume={(action, changes) => run(action === "abort" ? "Aborting" : "Resuming",
            () => breakpointsApi.resume(flow.id, action, changes))} />}
      </div>
    </section>
  );
}

function PausedEditor({ flow, onResume }: { flow: PausedFlow; onResume: (action: Action, changes: ReturnType<typeof modifications>) => Promise<void> }) {
  const message = flow.phase === "request" ? flow.request : flow.response;
  const [method, setMethod] = useState(flow.request.method);
  const [url, setUrl] = useState(flow.request.url);
  const [status, setStatus] = useState(String(flow.response?.status ?? 200));
  const [headers, setHeaders] = useState(headersText(message?.headers ?? []));
  const [body, setBody] = useState(message?.body ?? "");
  const [error, setError] = useState<string | null>(null);

  const send = useCallback(async (action: Action) => {
    try {
      const fields = parseHeadersText(headers);
      const edited = { method, url, status, headers: fields, body: message?.body === null ? null : body };
      // A mock at the request phase answers with the status and body above (no headers of the
      // request's); at the response phase with the response as edited.
      const mock = flow.phase === "response" ? { status: Number(status), headers: fields, body } : { status: Number(status), body };
      const changes = action === "mock" ? mock : action === "abort" ? {} : modifications(flow, edited);
      setError(null);
      await onResume(action, changes);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }, [flow, message, method, url, status, headers, body, onResume]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
      event.preventDefault();
      void send(event.shiftKey ? "abort" : "continue");
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [send]);

  return (
    <form className="paused-editor" data-testid="paused-editor" onSubmit={(e) => { e.preventDefault(); void send("continue"); }}>
      <h3 className="small-title">Paused at its {flow.phase}: {flow.request.method} {flow.request.url}</h3>
      {flow.phase === "request" ? (
        <div className="paused-line">
          <input aria-label="Method" className="method" value={method} onChange={(e) => setMethod(e.target.value)} />
          <input aria-label="URL" className="url" value={url} onChange={(e) => setUrl(e.target.value)} />
          <label title="The status a mock answers with">Mock status <input aria-label="Status" className="method" value={status}
            onChange={(e) => setStatus(e.target.value)} /></label>
        </div>
      ) : (
        <div className="paused-line">
          <label>Status <input aria-label="Status" className="method" value={status} onChange={(e) => setStatus(e.target.value)} /></label>
        </div>
      )}
      <label className="paused-field">Headers
        <textarea aria-label="Headers" rows={8} value={headers} onChange={(e) => setHeaders(e.target.value)} spellCheck={false} /></label>
      <label className="paused-field">Body
        <textarea aria-label="Body" rows={10} value={body} onChange={(e) => setBody(e.target.value)} spellCheck={false}
          disabled={message?.body === null} placeholder={message?.body === null ? "The body streams (larger than proxy.body_buffer_limit): it cannot be edited" : ""} /></label>
      {error && <div className="error-text" role="alert">{error}</div>}
      <div className="rules-actions">
        <button type="submit" className="primary" title="Ctrl+Enter">Continue</button>
        <button type="button" className="danger" title="Ctrl+Shift+Enter" onClick={() => void send("abort")}>Abort</button>
        <button type="button" title="Answer the client with the status and body above: the origin is not asked (at the request phase) or its answer is replaced"
          onClick={() => void send("mock")}>Mock</button>
        <span className="muted small">Ctrl+Enter continues, Ctrl+Shift+Enter aborts.</span>
      </div>
    </form>
  );
}
