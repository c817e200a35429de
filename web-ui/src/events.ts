// The event socket (/api/events): flows added/updated/deleted, sessions, breakpoints, resets. Reconnects
// with a growing delay; a reconnect counts as a reset (changes may have been missed).
import type { FlowSummary, Session } from "./api";
import type { PausedFlow } from "./breakpoints";

export type EventMessage =
  | { type: "flows"; flows: FlowSummary[]; deleted: string[] }
  | { type: "sessions"; sessions: Session[] }
  | { type: "settings"; name: string }
  | { type: "breakpoint:hit"; flow: PausedFlow }
  | { type: "breakpoint:resumed"; id: string; action: string; phase: string }
  | { type: "reset" };

export interface EventHandlers {
  message: (message: EventMessage) => void;
  connected: (connected: boolean) => void;
}

export class EventSocket {
  private socket: WebSocket | null = null;
  private delay = 500;
  private timer: number | undefined;
  private closed = false;
  private opened = false;

  constructor(private sessionId: number | null, private readonly handlers: EventHandlers) {
    this.connect();
  }

  private connect(): void {
    if (this.closed) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = this.sessionId === null ? "" : `?sessionId=${this.sessionId}`;
    const socket = new WebSocket(`${scheme}://${location.host}/api/events${query}`);
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 500;
      // a subscription asked for while connecting (the URL was made before it)
      if (this.sessionId !== null) socket.send(JSON.stringify({ type: "subscribe", sessionId: this.sessionId }));
      this.handlers.connected(true);
      if (this.opened) this.handlers.message({ type: "reset" });
      this.opened = true;
    };
    socket.onmessage = (event) => {
      try {
        this.handlers.message(JSON.parse(event.data as string) as EventMessage);
      } catch {
        // not a message of ours
      }
    };
    socket.onclose = () => {
      this.socket = null;
      if (this.closed) return;
      this.handlers.connected(false);
      this.timer = window.setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    };
  }

  /** Follow another session's flows (null: every session's). */
  subscribe(sessionId: number | null): void {
    this.sessionId = sessionId;
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "subscribe", sessionId }));
    }
  }

  close(): void {
    this.closed = true;
    window.clearTimeout(this.timer);
    this.socket?.close(1000);
  }
}
