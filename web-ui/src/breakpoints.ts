// Breakpoints and the flows paused at them (docs/api.md, Breakpoints): the API's shapes and
// calls, and what the editor of a paused flow sends back.
import { call, type Headers } from "./api";

export type Phase = "request" | "response" | "both";
export type Action = "continue" | "abort" | "mock";

export interface Breakpoint {
  id: string;
  name: string;
  filter: string;
  phase: Phase;
  enabled: boolean;
}

export interface PausedMessage {
  headers: Headers;
  /** Decoded text; null while the body streams (it cannot be edited then). */
  body: string | null;
}

export interface PausedFlow {
  id: string;
  phase: "request" | "response";
  breakpointId: string;
  pausedAt: number;
  request: PausedMessage & { method: string; url: string };
  response: (PausedMessage & { status: number; reason: string }) | null;
}

export type Modifications = Partial<{ method: string; url: string; status: number; headers: Headers; body: string }>;

export const breakpointsApi = {
  list: () => call<{ breakpoints: Breakpoint[]; file: string; error?: string }>("GET", "/api/breakpoints"),
  create: (breakpoint: Partial<Breakpoint>) => call<Breakpoint>("POST", "/api/breakpoints", breakpoint),
  patch: (id: string, changes: Partial<Breakpoint>) => call<Breakpoint>("PATCH", `/api/breakpoints/${encodeURIComponent(id)}`, changes),
  remove: (id: string) => call<{ deleted: string }>("DELETE", `/api/breakpoints/${encodeURIComponent(id)}`),
  paused: () => call<{ paused: PausedFlow[] }>("GET", "/api/breakpoints/paused"),
  resume: (id: string, action: Action, modifications: Modifications = {}) =>
    call<PausedFlow>("POST", `/api/breakpoints/paused/${encodeURIComponent(id)}/resume`, { action, modifications }),
};

/** What the editor sends to continue a flow: only what differs from what was paused. */
export function modifications(flow: PausedFlow, edited: { method: string; url: string; status: string; headers: Headers; body: string | null }): Modifications {
  const changes: Modifications = {};
  const message = flow.phase === "request" ? flow.request : flow.response;
  if (!message) return changes;
  if (flow.phase === "request") {
    if (edited.method !== flow.request.method) changes.method = edited.method;
    if (edited.url !== flow.request.url) changes.url = edited.url;
  } else if (flow.response && Number(edited.status) !== flow.response.status) {
    changes.status = Number(edited.status);
  }
  if (JSON.stringify(edited.headers) !== JSON.stringify(message.headers)) changes.headers = edited.headers;
  if (edited.body !== null && edited.body !== message.body) changes.body = edited.body;
  return changes;
}
