// A WebSocket flow's messages: the list (filtered by direction and type), one message's content,
// and a box that sends a message into the open connection. While the connection is open the
// list follows it (new messages are asked for every second, after the last one shown).
import { useEffect, useRef, useState } from "react";
import { formatClock, formatSize } from "../format";
import { type Direction, type FrameFilter, type WebSocketFrame, shownContent, websocketApi } from "../websocket";

const FOLLOW_MS = 1000;

export function WebSocketMessages({ flowId, onNotify }: { flowId: string; onNotify: (message: string) => void }) {
  const [filter, setFilter] = useState<FrameFilter>({ direction: "", type: "" });
  const [frames, setFrames] = useState<WebSocketFrame[]>([]);
  const [open, setOpen] = useState(false);
  const [selected, setSelected] = useState<WebSocketFrame | null>(null);
  const [to, setTo] = useState<Direction>("server");
  const [text, setText] = useState("");
  // Asks for what came since the last page now (after a send), instead of at the next tick.
  const refresh = useRef<() => void>(() => undefined);

  useEffect(() => {
    const controller = new AbortController();
    let after = 0;
    let timer: number | undefined;
    let loading = false;
    let again = false;
    setFrames([]);
    setSelected(null);
    const load = async () => {
      if (loading) { again = true; return; }
      loading = true;
      window.clearTimeout(timer);
      try {
        const [page, count] = await Promise.all([
          websocketApi.frames(flowId, filter, after, controller.signal),
          websocketApi.count(flowId, filter, controller.signal),
        ]);
        if (page.frames.length) {
          after = page.frames[page.frames.length - 1].id;
          setFrames((shown) => [...shown, ...page.frames]);
        }
        setOpen(count.open);
        if (count.open || page.next !== null || again) {
          timer = window.setTimeout(() => void load(), page.next !== null || again ? 0 : FOLLOW_MS);
        }
      } catch (err) {
        if (!controller.signal.aborted) onNotify(`Could not read the messages: ${err instanceof Error ? err.message : err}`);
      } finally {
        loading = false;
        again = false;
      }
    };
    refresh.current = () => void load();
    void load();
    return () => { controller.abort(); window.clearTimeout(timer); };
  }, [flowId, filter, onNotify]);

  const show = async (frame: WebSocketFrame) => {
    try {
      setSelected(await websocketApi.frame(flowId, frame.id));
    } catch (err) {
      onNotify(`Could not read the message: ${err instanceof Error ? err.message : err}`);
    }
  };
  const send = async () => {
    try {
      await websocketApi.send(flowId, to, text);
      setText("");
      refresh.current();
    } catch (err) {
      onNotify(`Not sent: ${err instanceof Error ? err.message : err}`);
    }
  };

  return (
    <div className="ws-messages" data-testid="ws-messages">
      <div className="ws-toolbar">
        <select aria-label="Direction" value={filter.direction}
          onChange={(e) => setFilter({ ...filter, direction: e.target.value as FrameFilter["direction"] })}>
          <option value="">both directions</option>
          <option value="client">sent by the client ↑</option>
          <option value="server">sent by the server ↓</option>
        </select>
        <select aria-label="Type" value={filter.type}
          onChange={(e) => setFilter({ ...filter, type: e.target.value as FrameFilter["type"] })}>
          <option value="">text and binary</option>
          <option value="text">text</option>
          <option value="binary">binary</option>
        </select>
        <span className="muted" data-testid="ws-count">{frames.length} messages{open ? " · open" : " · closed"}</span>
      </div>
      <div className="ws-list" role="list" aria-label="Messages">
        {frames.length === 0 && <div className="muted pad">No messages.</div>}
        {frames.map((frame) => (
          <button key={frame.id} role="listitem" className={`ws-row${selected?.id === frame.id ? " selected" : ""}`}
            onClick={() => void show(frame)} title={frame.direction === "client" ? "sent by the client" : "sent by the server"}>
            <span className={`ws-dir ws-${frame.direction}`}>{frame.direction === "client" ? "↑" : "↓"}</span>
            <span className="ws-type">{frame.type}</span>
            <span className="ws-size">{formatSize(frame.size)}</span>
            <span className="muted">{formatClock(frame.timestamp)}</span>
            {frame.injected && <span className="chip">injected</span>}
            {frame.truncated && <span className="chip">truncated</span>}
          </button>
        ))}
      </div>
      {selected && (
        <pre className="ws-content" data-testid="ws-content">{shownContent(selected)}{selected.truncated ? "\n… (truncated in storage)" : ""}</pre>
      )}
      <form className="ws-send" onSubmit={(e) => { e.preventDefault(); void send(); }}>
        <select aria-label="Send to" value={to} onChange={(e) => setTo(e.target.value as Direction)}>
          <option value="server">to the server</option>
          <option value="client">to the client</option>
        </select>
        <input aria-label="Message to send" placeholder={open ? "a text message" : "the connection is closed"} value={text}
          onChange={(e) => setText(e.target.value)} disabled={!open} />
        <button type="submit" disabled={!open}>Send</button>
      </form>
    </div>
  );
}
