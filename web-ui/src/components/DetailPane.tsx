// One flow: request and response side by side (stacked on narrow windows), with heads, query,
// cookies and bodies; timings, TLS and connection, the error, the plugins that changed it;
// and the actions: replay, edit and replay, compose from it, copy as curl/HTTPie/raw, HAR, mark,
// tags, comment.
import { useEffect, useState } from "react";
import { api, type FlowRecord, type FlowSummary } from "../api";
import { formatDateTime, formatDuration, formatSize, statusClass, versionName } from "../format";
import { formFields, header, queryParams, requestCookies, responseCookies } from "../headers";
import { BodyViewer } from "./BodyViewer";
import { HeadTable, Pairs } from "./HeadTable";
import { Waterfall } from "./Waterfall";
import { WebSocketMessages } from "./WebSocketMessages";

export const MARKS = ["red", "orange", "yellow", "green", "blue", "purple", "grey"];

export interface DetailProps {
  summary: FlowSummary;
  onClose: () => void;
  onReplay: (flow: FlowSummary) => void;
  onEdit: (flow: FlowRecord) => void;
  onCompose: (flow: FlowRecord) => void;
  onExport: (flow: FlowSummary, format: "curl" | "httpie" | "raw") => void;
  onQuickFilter: (field: "host" | "status", value: string) => void;
  onNotify: (message: string) => void;
}

function Tls({ info, title }: { info: FlowRecord["tlsClient"]; title: string }) {
  if (!info) return null;
  const pairs = Object.entries(info).filter(([, v]) => v) as [string, string][];
  return <><div className="subhead">{title}</div><Pairs pairs={pairs} /></>;
}

function Annotations({ record, onNotify, onSaved }: { record: FlowRecord; onNotify: (m: string) => void; onSaved: () => void }) {
  const [tags, setTags] = useState(record.tags.join(", "));
  const [comment, setComment] = useState(record.comment);
  const savedTags = record.tags.join(", ");
  // only when the saved values change (a refetch of the same flow keeps what is being typed)
  useEffect(() => setTags(savedTags), [record.id, savedTags]);
  useEffect(() => setComment(record.comment), [record.id, record.comment]);
  const save = async (changes: Parameters<typeof api.annotate>[1]) => {
    try {
      await api.annotate(record.id, changes);
      onSaved();
    } catch (err) {
      onNotify(`Could not save: ${err instanceof Error ? err.message : err}`);
    }
  };
  const tagList = () => tags.split(",").map((t) => t.trim()).filter(Boolean);
  return (
    <div className="annotations">
      <span className="marks" role="group" aria-label="Mark">
        {MARKS.map((colour) => (
          <button key={colour} className={`swatch mark-${colour}${record.mark === colour ? " on" : ""}`} title={`mark ${colour}`}
            aria-pressed={record.mark === colour} onClick={() => save({ mark: record.mark === colour ? null : colour })} />
        ))}
      </span>
      <input aria-label="Tags" placeholder="tags, comma-separated" value={tags} onChange={(e) => setTags(e.target.value)}
        onBlur={() => { if (tagList().join(",") !== record.tags.join(",")) void save({ tags: tagList() }); }}
        onKeyDown={(e) => { if (e.key === "Enter") void save({ tags: tagList() }); }} />
      <input aria-label="Comment" placeholder="comment" className="comment" value={comment} onChange={(e) => setComment(e.target.value)}
        onBlur={() => { if (comment !== record.comment) void save({ comment }); }}
        onKeyDown={(e) => { if (e.key === "Enter") void save({ comment }); }} />
    </div>
  );
}

export function DetailPane({ summary, onClose, onReplay, onEdit, onCompose, onExport, onQuickFilter, onNotify }: DetailProps) {
  const [record, setRecord] = useState<FlowRecord | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [reload, setReload] = useState(0);
  const [tab, setTab] = useState<"http" | "messages">("http");
  useEffect(() => {
    const controller = new AbortController();
    setError(null);
    api.flow(summary.id, controller.signal).then(setRecord, (err) => {
      if (!controller.signal.aborted) setError(err instanceof Error ? err.message : String(err));
    });
    return () => controller.abort();
  }, [summary.id, summary.version, reload]);

  const flow = record && record.id === summary.id ? record : null;
  const cls = statusClass(summary.status, summary.error);
  const form = flow && (header(flow.requestHeaders, "content-type") ?? "").includes("x-www-form-urlencoded");
  // (A connection still open is not marked websocket yet: its handshake request says so.)
  const websocket = flow && (flow.websocket || (!flow.status && (header(flow.requestHeaders, "upgrade") ?? "").toLowerCase() === "websocket"));
  return (
    <section className="detail" aria-label="Flow detail" data-testid="detail">
      <header className="detail-head">
        <div className="detail-title">
          <span className="method">{summary.method || summary.kind}</span>
          <button className={`chip s-${cls}`} title="Filter by this status" onClick={() => summary.status && onQuickFilter("status", String(summary.status))}>
            {summary.status ?? (summary.error ? "error" : "pending")}
          </button>
          <span className="url" title={summary.url}>{summary.url || summary.host}</span>
          <button className="ghost close" onClick={onClose} title="Close (Esc)" aria-label="Close the detail">✕</button>
        </div>
        <div className="detail-actions">
          <button className="chip" title="Filter by this host" onClick={() => onQuickFilter("host", summary.host)}>{summary.host}</button>
          <button onClick={() => onReplay(summary)} disabled={summary.kind !== "http"} title="Replay (r)">Replay</button>
          <button onClick={() => flow && onEdit(flow)} disabled={!flow || summary.kind !== "http"} title="Edit and replay (e)">Edit &amp; replay</button>
          <button onClick={() => flow && onCompose(flow)} disabled={!flow || summary.kind !== "http"}
            title="A new request, starting from this one">Compose from this</button>
          <span className="group">Copy as
            <button onClick={() => onExport(summary, "curl")}>curl</button>
            <button onClick={() => onExport(summary, "httpie")}>HTTPie</button>
            <button onClick={() => onExport(summary, "raw")}>raw</button>
          </span>
          <a className="button" href={`/api/traffic/${summary.id}/export?format=har`} download={`flow-${summary.id}.har`}>HAR</a>
        </div>
        {flow && <Annotations record={flow} onNotify={onNotify} onSaved={() => setReload((n) => n + 1)} />}
      </header>
      {error && <div className="error-text">{error}</div>}
      {!flow && !error && <div className="muted pad">Loading…</div>}
      {flow && (
        <div className="detail-body">
          {flow.error && <div className="flow-error" role="alert"><b>Error:</b> {flow.error}</div>}
          {websocket && (
            <div className="tabs" role="tablist" aria-label="WebSocket flow">
              <button role="tab" aria-selected={tab === "http"} onClick={() => setTab("http")}>Handshake</button>
              <button role="tab" aria-selected={tab === "messages"} onClick={() => setTab("messages")}>Messages</button>
            </div>
          )}
          {websocket && tab === "messages" ? <WebSocketMessages flowId={flow.id} onNotify={onNotify} /> : <>
          <div className="sides">
            <div className="side">
              <h3>Request <span className="muted" data-testid="request-version">{versionName(flow.httpVersion)} · {formatSize(flow.requestSize)}</span></h3>
              <details open><summary>Headers</summary>
                <HeadTable received={flow.requestHeaders} sent={flow.requestHeadersSent} label="request" /></details>
              <details open={queryParams(flow.url).length > 0}><summary>Query ({queryParams(flow.url).length})</summary>
                <Pairs pairs={queryParams(flow.url)} empty="No query." /></details>
              <details open={requestCookies(flow.requestHeaders).length > 0}><summary>Cookies ({requestCookies(flow.requestHeaders).length})</summary>
                <Pairs pairs={requestCookies(flow.requestHeaders)} empty="No cookies." /></details>
              {form && flow.requestStored > 0 && flow.requestStored < 65536 && <FormFields id={flow.id} />}
              <details open><summary>Body</summary>
                <BodyViewer flowId={flow.id} direction="request" contentType={header(flow.requestHeaders, "content-type")}
                  encoding={flow.requestBodyEncoding} stored={flow.requestStored} truncated={flow.requestTruncated} version={flow.version} />
              </details>
              {flow.requestTrailers && flow.requestTrailers.length > 0 && (
                <details open data-testid="request-trailers"><summary>Trailers ({flow.requestTrailers.length})</summary>
                  <Pairs pairs={flow.requestTrailers} /></details>
              )}
            </div>
            <div className="side">
              <h3>Response <span className="muted">{flow.status ?? ""} {flow.reason ?? ""} · {formatSize(flow.responseSize)}</span></h3>
              <details open><summary>Headers</summary>
                <HeadTable received={flow.responseHeaders} sent={flow.responseHeadersSent} label="response" /></details>
              {responseCookies(flow.responseHeaders).length > 0 && (
                <details open><summary>Set-Cookie ({responseCookies(flow.responseHeaders).length})</summary>
                  <Pairs pairs={responseCookies(flow.responseHeaders).map((c): [string, string] => [c.name, [c.value, ...c.attributes.map(([k, v]) => (v ? `${k}=${v}` : k))].join("; ")])} />
                </details>
              )}
              <details open><summary>Body</summary>
                <BodyViewer flowId={flow.id} direction="response" contentType={flow.contentType ?? header(flow.responseHeaders, "content-type")}
                  encoding={flow.responseBodyEncoding} stored={flow.responseStored} truncated={flow.responseTruncated} version={flow.version} />
              </details>
              {flow.responseTrailers && flow.responseTrailers.length > 0 && (
                <details open data-testid="response-trailers"><summary>Trailers ({flow.responseTrailers.length})</summary>
                  <Pairs pairs={flow.responseTrailers} /></details>
              )}
            </div>
          </div>
          <div className="sides">
            <div className="side">
              <h3>Timing</h3>
              <Waterfall timings={flow.timings} duration={flow.duration} />
            </div>
            <div className="side">
              <h3>Connection</h3>
              <Pairs pairs={connection(flow)} />
              <Tls info={flow.tlsClient} title="TLS with the client" />
              <Tls info={flow.tlsServer} title="TLS with the origin" />
            </div>
          </div>
          </>}
        </div>
      )}
    </section>
  );
}

function connection(flow: FlowRecord): [string, string][] {
  const pairs: [string, string][] = [
    ["started", formatDateTime(flow.startedAt)],
    ["duration", formatDuration(flow.duration)],
    ["client", flow.clientAddr ?? ""],
    ["server", flow.serverAddr ?? ""],
    ["mode", flow.mode],
    ["modified by", flow.modifiedBy.join(", ")],
    ["replay of", flow.replayOf ?? ""],
  ];
  if (flow.kind === "tunnel") pairs.push(["bytes up / down", `${formatSize(flow.bytesUp)} / ${formatSize(flow.bytesDown)}`]);
  return pairs.filter(([, value]) => value);
}

function FormFields({ id }: { id: string }) {
  const [fields, setFields] = useState<[string, string][] | null>(null);
  useEffect(() => {
    const controller = new AbortController();
    fetch(`/api/traffic/${id}/request/body?decoded=1`, { credentials: "same-origin", signal: controller.signal })
      .then((r) => (r.ok ? r.text() : ""))
      .then((text) => setFields(formFields(text)), () => undefined);
    return () => controller.abort();
  }, [id]);
  if (!fields) return null;
  return <details open><summary>Form ({fields.length})</summary><Pairs pairs={fields} /></details>;
}
