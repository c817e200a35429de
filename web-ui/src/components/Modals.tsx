// Dialogs: keyboard shortcuts, an exported request (curl/HTTPie/raw), edit and replay.
import { useState, type ReactNode } from "react";
import type { FlowRecord, ReplayEdit } from "../api";
import { headersText, parseHeadersText } from "../headers";

export const SHORTCUTS: [string, string][] = [
  ["j / ↓", "next flow"], ["k / ↑", "previous flow"], ["Home / End", "first / last flow"],
  ["Enter", "open the detail"], ["Esc", "close the detail or a dialog"], ["/", "focus the filter"],
  ["r", "replay the flow"], ["e", "edit and replay"], ["m", "mark the flow (red) or clear it"],
  ["Shift+click / Ctrl+click", "select a range / more flows"], ["Alt+click a host or status", "filter by it"],
  ["Shift+R", "rules, network profile, pass-through hosts (again: back to the traffic)"],
  ["Shift+B", "breakpoints and paused flows; there Ctrl+Enter continues, Ctrl+Shift+Enter aborts"], ["?", "this list"],
];

export function Modal({ title, onClose, children }: { title: string; onClose: () => void; children: ReactNode }) {
  return (
    <div className="modal-back" onMouseDown={(e) => { if (e.target === e.currentTarget) onClose(); }}>
      <div className="modal" role="dialog" aria-label={title} aria-modal="true">
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

export function EditReplay({ flow, body, onSend, onClose }: {
  flow: FlowRecord; body: string | null; onSend: (edit: ReplayEdit) => Promise<void>; onClose: () => void;
}) {
  const [method, setMethod] = useState(flow.method);
  const [url, setUrl] = useState(flow.url);
  const [headers, setHeaders] = useState(headersText(flow.requestHeaders.filter(([name]) => !name.startsWith(":"))));
  const [text, setText] = useState(body ?? "");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <Modal title="Edit and replay" onClose={onClose}>
      <form className="edit-form" onSubmit={async (event) => {
        event.preventDefault();
        setError(null);
        try {
          const edit: ReplayEdit = { method, url, headers: parseHeadersText(headers) };
          if (body !== null || text) edit.body = text;
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
          <input aria-label="URL" className="edit-url" value={url} onChange={(e) => setUrl(e.target.value)} />
        </div>
        <label>Headers (one "Name: value" a line)
          <textarea aria-label="Headers" rows={8} value={headers} onChange={(e) => setHeaders(e.target.value)} spellCheck={false} /></label>
        <label>Body {body === null && flow.requestStored > 0 ? "(the recorded body is binary or large: it is sent as recorded unless you type one)" : ""}
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
