// The API of a WebSocket flow's messages (docs/api.md, WebSocket messages).
import { call } from "./api";

export type Direction = "client" | "server";
export type MessageType = "text" | "binary";

export interface WebSocketFrame {
  id: number;
  trafficId: string;
  kind: "open" | "message" | "close";
  timestamp: number;
  direction: Direction;
  type: MessageType;
  size: number;
  injected: boolean;
  truncated: boolean;
  content?: string;
  contentBase64?: string;
}

export interface FrameFilter {
  direction: Direction | "";
  type: MessageType | "";
}

function query(filter: FrameFilter, extra: Record<string, string> = {}): string {
  const params = new URLSearchParams(extra);
  if (filter.direction) params.set("direction", filter.direction);
  if (filter.type) params.set("type", filter.type);
  const text = params.toString();
  return text ? `?${text}` : "";
}

export const websocketApi = {
  frames: (id: string, filter: FrameFilter, after: number, signal?: AbortSignal) =>
    call<{ frames: WebSocketFrame[]; next: number | null }>(
      "GET", `/api/websocket/${id}/frames${query(filter, { after: String(after), limit: "1000" })}`, undefined, signal),
  count: (id: string, filter: FrameFilter, signal?: AbortSignal) =>
    call<{ count: number; open: boolean }>("GET", `/api/websocket/${id}/count${query(filter)}`, undefined, signal),
  frame: (id: string, frameId: number, signal?: AbortSignal) =>
    call<WebSocketFrame>("GET", `/api/websocket/${id}/frame/${frameId}`, undefined, signal),
  send: (id: string, to: Direction, content: string) =>
    call<{ sent: boolean }>("POST", `/api/websocket/${id}/send`, { to, content }),
};

/** What a message's content shows as: its text, or its bytes in hex (at most `limit` bytes). */
export function shownContent(frame: WebSocketFrame, limit = 4096): string {
  if (frame.content !== undefined) return frame.content;
  const bytes = atob(frame.contentBase64 ?? "");
  const hex: string[] = [];
  for (let i = 0; i < Math.min(bytes.length, limit); i++) hex.push(bytes.charCodeAt(i).toString(16).padStart(2, "0"));
  return hex.join(" ") + (bytes.length > limit ? " …" : "");
}
