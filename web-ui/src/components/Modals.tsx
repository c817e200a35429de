// Dialogs: keyboard shortcuts, an exported request (curl/HTTPie/raw), and the request editor
// shared by edit-and-replay and compose.
import { useState, type ReactNode } from "react";
import type { FlowRecord, ReplayEdit } from "../api";
import { pastedHeaderRows, rowsToHeaders, type HeaderRow } from "../headers";

export const SHORTCUTS: [string, string][] = [
  ["j / ↓", "next flow"], ["k / ↑", "previous flow"], ["Home / End", "first / last flow"],
  ["Enter", "open the detail"], ["Esc", "close the detail or a dialog"], ["/", "focus the filter"],
  ["r", "replay the flow"], ["e", "edit and replay"], ["n", "compose a new request"],
  ["m", "mark the flow (red) or clear it"],
  ["Shift+click / Ctrl+click", "select a range / more flows"], ["Alt+click a host or status", "filter by it"],
  ["Shift+R", "rules, network profile, pass-through hosts (again: back to the traffic)"],
  ["Shift+B", "breakpoints and paused flows; there Ctrl+Enter continues, Ctrl+Shift+Enter aborts"], ["?", "this list"],
];

export function Modal({ title, onClose, wide, children }: { title: string; onClose: () => void; wide?: boolean; children: ReactNode }) {
  return (
    <div className="modal-back" onMouseDown={(e) => { if (e.target === e.currentTarget) onClose(); }}>
      <div className={`modal${wide ? " wide" : ""}`} role="dialog" aria-label={title} aria-modal="true">
        <header><h2>{title}</h2><button className="ghost" onClick={onClose} aria-label="Close">✕</button></header>
        {children}
      </div>
    </div>
  );
}

export function Shortcuts({ onClose }: { onClose: () => void }) {
  return (
    <Modal title="Keyboard shortcuts" onClose={onClose}>
      <table className="kv shortcuts"><tbody>
        {SHORTCUTS.map(([keys, what]) => <tr key={keys}><th><kbd>{keys}</kbd></th><td>{what}</td></tr>)}
      </tbody></table>
    </Modal>
  );
}

export function ExportText({ title, text, onClose }: { title: string; text: string; onClose: () => void }) {
  return (
    <Modal title={title} onClose={onClose}>
      <textarea className="export-text" readOnly value={text} rows={Math.min(20, text.split("\n").length + 1)}
        onFocus={(e) => e.currentTarget.select()} data-testid="export-text" />
    </Modal>
  );
}

/** What the editor starts from: a flow's request, or a blank one. ``body`` null: the recorded
 * body is binary or too large to edit as text. */
export interface Draft {
  method: string;
  url: string;
  headers: HeaderRow[];
  body: string | null;
  /** What a body left as null means here (shown by the body field). */
  bodyNote: string;
}

export const BLANK: Draft = { method: "GET", url: "", headers: [{ name: "", value: "" }], body: "", bodyNote: "" };

export function draftOf(flow: FlowRecord, body: string | null, bodyNote: string): Draft {
  return {
    method: flow.method, url: flow.url, body, bodyNote,
    headers: flow.requestHeaders.filter(([name]) => !name.startsWith(":")).map(([name, value]) => ({ name, value })),
  };
}

function HeaderRows({ rows, onChange }: { rows: HeaderRow[]; onChange: (rows: HeaderRow[]) => void }) {
  const set = (index: number, row: HeaderRow) => onChange(rows.map((old, i) => (i === index ? row : old)));
  return (
    <fieldset className="header-rows">
      <legend>Headers</legend>
      {rows.map((row, i) => (
        <div className="header-row" key={i}>
          <input aria-label={`Header name ${i + 1}`} placeholder="Name (or paste Name: value lines)" value={row.name} spellCheck={false}
            onChange={(e) => set(i, { ...row, name: e.target.value })}
            onPaste={(e) => {
              const pasted = pastedHeaderRows(e.clipboardData.getData("text"));
              if (!pasted) return;
              e.preventDefault();
              const kept = row.name || row.value ? [row] : [];
              onChange([...rows.slice(0, i), ...kept, ...pasted, ...rows.slice(i + 1)]);
            }} />
          <input aria-label={`Header value ${i + 1}`} placeholder="value" value={row.value} spellCheck={false}
            onChange={(e) => set(i, { ...row, value: e.target.value })} />
          <button type="button" className="ghost" aria-label={`Remove header ${i + 1}`} title="Remove"
            onClick={() => onChange(rows.filter((_, at) => at !== i))}>✕</button>
        </div>
      ))}
      <button type="button" onClick={() => onChange([...rows, { name: "", value: "" }])}>Add header</button>
    </fieldset>
  );
}

/** Method, URL, header rows and body; ``onSend`` gets them as the replay API's edit. */
export function RequestEditor({ title, draft, onSend, onClose }: {
  title: string; draft: Draft; onSend: (edit: ReplayEdit) => Promise<void>; onClose: () => void;
}) {
  const [method, setMethod] = useState(draft.method);
  const [url, setUrl] = useState(draft.url);
  const [headers, setHeaders] = useState(draft.headers);
  const [text, setText] = useState(draft.body ?? "");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <Modal title={title} onClose={onClose}>
      <form className="edit-form" onSubmit={async (event) => {
        event.preventDefault();
        setError(null);
        try {
          const edit: ReplayEdit = { method, url, headers: rowsToHeaders(headers) };
          if (draft.body !== null || text) edit.body = text;
          setBusy(true);
          await onSend(edit);
        } catch (err) {
          setError(err instanceof Error ? err.message : String(err));
        } finally {
          setBusy(false);
        }
      }}>
        <div className="edit-line">
          <input aria-label="Method" className="edit-method" value={method} onChange={(e) => setMethod(e.target.value.toUpperCase())} />
          <input aria-label="URL" className="edit-url" value={url} placeholder="https://example.com/path" autoFocus={!draft.url}
            onChange={(e) => setUrl(e.target.value)} />
        </div>
        <HeaderRows rows={headers} onChange={setHeaders} />
        <label>Body {draft.body === null ? draft.bodyNote : ""}
          <textarea aria-label="Body" rows={6} value={text} onChange={(e) => setText(e.target.value)} spellCheck={false} /></label>
        {error && <div className="error-text" role="alert">{error}</div>}
        <div className="edit-buttons">
          <button type="button" onClick={onClose}>Cancel</button>
          <button type="submit" className="primary" disabled={busy}>{busy ? "Sending…" : "Send"}</button>
        </div>
      </form>
    </Modal>
  );
}
