// The one network module: every call the UI makes to the inspector's public API (docs/api.md).
// The browser holds the token as an HttpOnly cookie (set by opening /?token=...), so requests
// carry no credentials of their own.

export type Headers = [string, string][];

export interface FlowSummary {
  id: string;
  sessionId: number;
  seq: number;
  version: number;
  kind: string;
  method: string;
  url: string;
  host: string;
  path: string;
  scheme: string;
  httpVersion: string;
  status: number | null;
  reason: string | null;
  contentType: string | null;
  requestSize: number | null;
  responseSize: number | null;
  startedAt: number;
  duration: number | null;
  error: string | null;
  mark: string | null;
  tags: string[];
  comment: string;
  websocket: boolean;
}

export interface Timings {
  connect?: number;
  tlsHandshake?: number;
  requestSent?: number;
  firstByte?: number;
  complete?: number;
}

export interface TlsInfo {
  sni?: string;
  version?: string;
  cipher?: string;
  alpn?: string;
  subject?: string;
  issuer?: string;
  notAfter?: string;
}

export interface FlowRecord extends FlowSummary {
  mode: string;
  clientAddr: string | null;
  serverAddr: string | null;
  port: number | null;
  requestHeaders: Headers;
  requestHeadersSent: Headers | null;
  responseHeaders: Headers | null;
  responseHeadersSent: Headers | null;
  /** Trailer fields (after a chunked or HTTP/2 body: gRPC's status), as received. */
  requestTrailers: Headers | null;
  responseTrailers: Headers | null;
  requestSizeDecoded: number | null;
  responseSizeDecoded: number | null;
  requestBodyEncoding: string;
  responseBodyEncoding: string;
  requestStored: number;
  responseStored: number;
  requestTruncated: boolean;
  responseTruncated: boolean;
  timings: Timings;
  tlsClient: TlsInfo | null;
  tlsServer: TlsInfo | null;
  modifiedBy: string[];
  replayOf: string | null;
  bytesUp: number | null;
  bytesDown: number | null;
}

export interface Session {
  id: number;
  name: string;
  createdAt: number;
  active: boolean;
  flowCount: number;
  storedBytes: number;
}

export interface Stats {
  total: number;
  methods?: Record<string, number>;
  statusClasses?: Record<string, number>;
  hosts?: { host: string; count: number }[];
  contentTypes?: { contentType: string; count: number }[];
  errors: number;
  requestBytes: number;
  responseBytes: number;
  storedBytes: number;
}

export interface Status {
  version: string;
  capturing?: boolean;
  paused?: boolean;
  flowsWritten?: number;
  bytesDropped?: number;
  eventClients: number;
  store: { sessions: number; flows: number; storedBytes: number; activeSession: Session };
  [key: string]: unknown;
}

/** GET /api/filter: what the filter language accepts. */
export interface FilterLanguage {
  fields: { name: string; description: string }[];
  flags: string[];
  marks: string[];
  aliases: string[];
  operators: string[];
  sorts: string[];
}

export interface TrafficPage {
  entries: FlowSummary[];
  next: number | string | null;
}

export interface ReplayResult {
  id: string;
  replayOf: string | null;
  status: number | null;
  error: string | null;
  /** The new flow, once the store has it (within 5 s). */
  flow?: FlowRecord;
}

export interface ReplayEdit {
  method?: string;
  url?: string;
  headers?: Headers;
  body?: string;
}

/** A refusal of the API: its message; for a filter syntax error the 0-based position, for a
 * refused settings value the field (`rules[2]`, `hosts[0]`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly position: number | null = null,
    readonly parameter: string | null = null,
    readonly field: string | null = null,
  ) {
    super(message);
  }
}

async function failure(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  let position: number | null = null;
  let parameter: string | null = null;
  let field: string | null = null;
  try {
    const data = await response.json();
    if (typeof data.error === "string") message = data.error;
    if (typeof data.position === "number") position = data.position;
    if (typeof data.parameter === "string") parameter = data.parameter;
    if (typeof data.field === "string") field = data.field;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, position, parameter, field);
}

export async function call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const init: RequestInit = { method, signal, credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return (await response.json()) as T;
}

/** One group of live settings (docs/api.md, Live settings). */
export interface SettingsGroup {
  name: string;
  title: string;
  description: string;
  schema: Record<string, unknown>;
  value: Record<string, unknown>;
}

export interface SettingsList {
  settings: SettingsGroup[];
  /** Settings of bundled plugins that are not active -> how to enable them. */
  unavailable: Record<string, string>;
}

/** A rule of the rules plugin: the JSON form of a [[rule]] table (see src/rules.ts). */
export type Rule = Record<string, unknown> & { id?: string; name?: string; enabled?: boolean; readOnly?: boolean };

export interface RuleList {
  rules: Rule[];
  configured: Rule[];
  file: string;
  error?: string;
}

export interface ListQuery {
  sessionId: number | null;
  filter: string;
  search: string;
  /** A column to sort by (GET /api/traffic?sort=), descending when asked. */
  sort?: { key: string; descending: boolean } | null;
}

export interface PageRequest {
  order: "newest" | "oldest";
  /** A seq, or with a sort the `[key, seq]` JSON of the row to continue after. */
  cursor?: number | string;
  limit: number;
  /** Arrival order even when the list is sorted (to find the newest flows). */
  arrival?: boolean;
  /** A sorted list's page at this position (a jump), instead of a cursor. */
  position?: number;
}

export function trafficUrl(query: ListQuery, page: PageRequest): string {
  const params = new URLSearchParams();
  if (query.sessionId !== null) params.set("sessionId", String(query.sessionId));
  if (query.filter.trim()) params.set("filter", query.filter);
  if (query.search.trim()) params.set("search", query.search);
  params.set("limit", String(page.limit));
  // The list's "newest" end is the sort's largest: a descending view reads it the other way.
  const sort = page.arrival ? null : query.sort;
  params.set("order", sort?.descending ? (page.order === "newest" ? "oldest" : "newest") : page.order);
  if (sort) params.set("sort", sort.key);
  if (page.cursor !== undefined) params.set("cursor", String(page.cursor));
  if (page.position !== undefined && sort) params.set("position", String(page.position));
  return `/api/traffic?${params}`;
}

export const api = {
  traffic: (query: ListQuery, page: PageRequest, signal?: AbortSignal) =>
    call<TrafficPage>("GET", trafficUrl(query, page), undefined, signal),
  stats: (sessionId: number, filter: string, signal?: AbortSignal) =>
    call<Stats>("GET", `/api/traffic/stats/${sessionId}?top=1${filter.trim() ? `&filter=${encodeURIComponent(filter)}` : ""}`,
      undefined, signal),
  flow: (id: string, signal?: AbortSignal) => call<FlowRecord>("GET", `/api/traffic/${id}`, undefined, signal),
  annotate: (id: string, changes: { mark?: string | null; tags?: string[]; comment?: string }) =>
    call<FlowSummary>("PATCH", `/api/traffic/${id}`, changes),
  deleteFlow: (id: string) => call<{ deleted: boolean }>("DELETE", `/api/traffic/${id}`),
  clearSession: (sessionId: number) => call<{ deleted: number }>("DELETE", `/api/traffic/session/${sessionId}`),
  replay: (id: string, edit: ReplayEdit = {}) => call<ReplayResult>("POST", `/api/traffic/${id}/replay`, edit),
  compose: (request: ReplayEdit) => call<ReplayResult>("POST", "/api/traffic/replay", request),
  sessions: () => call<{ sessions: Session[] }>("GET", "/api/sessions"),
  createSession: (name: string, activate: boolean) => call<Session>("POST", "/api/sessions", { name, activate }),
  renameSession: (id: number, name: string) => call<Session>("PATCH", `/api/sessions/${id}`, { name }),
  deleteSession: (id: number) => call<unknown>("DELETE", `/api/sessions/${id}`),
  activateSession: (id: number) => call<Session>("POST", `/api/sessions/${id}/activate`),
  status: () => call<Status>("GET", "/api/status"),
  settings: () => call<SettingsList>("GET", "/api/settings"),
  putSettings: (name: string, value: unknown) =>
    call<Record<string, unknown>>("PUT", `/api/settings/${encodeURIComponent(name)}`, value),
  rules: () => call<RuleList>("GET", "/api/rules"),
  createRule: (rule: Rule) => call<Rule>("POST", "/api/rules", rule),
  replaceRule: (id: string, rule: Rule) => call<Rule>("PUT", `/api/rules/${encodeURIComponent(id)}`, rule),
  toggleRule: (id: string) => call<Rule>("POST", `/api/rules/${encodeURIComponent(id)}/toggle`),
  deleteRule: (id: string) => call<{ deleted: string }>("DELETE", `/api/rules/${encodeURIComponent(id)}`),
  reorderRules: (ids: string[]) => call<RuleList>("POST", "/api/rules/reorder", { ids }),
  // -- capture's pause switch and the filter language's words (the traffic list's toolbar)
  setCapture: (paused: boolean) => call<{ paused: boolean }>("PUT", "/api/capture", { paused }),
  filterLanguage: () => call<FilterLanguage>("GET", "/api/filter"),
  topStats: (sessionId: number) => call<Stats>("GET", `/api/traffic/stats/${sessionId}?top=50`),

  async exportText(id: string, format: "curl" | "httpie" | "raw"): Promise<string> {
    const response = await fetch(`/api/traffic/${id}/export?format=${format}`, { credentials: "same-origin" });
    if (!response.ok) throw await failure(response);
    return response.text();
  },

  async harOfSelection(ids: string[]): Promise<Blob> {
    const response = await fetch("/api/har/export", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids }),
    });
    if (!response.ok) throw await failure(response);
    return response.blob();
  },

  async importHar(file: File): Promise<Session> {
    const response = await fetch(`/api/har/import?name=${encodeURIComponent(`Imported ${file.name}`)}`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: file,
    });
    if (!response.ok) throw await failure(response);
    return (await response.json()) as Session;
  },
};

export function bodyUrl(id: string, direction: "request" | "response", decoded: boolean): string {
  return `/api/traffic/${id}/${direction}/body${decoded ? "?decoded=1" : ""}`;
}

export function harSessionUrl(sessionId: number, filter: string): string {
  return `/api/har/export/${sessionId}${filter.trim() ? `?filter=${encodeURIComponent(filter)}` : ""}`;
}

/** A body's first ``limit`` bytes (read from the stream, then the request is cancelled). */
export async function fetchBodyPrefix(url: string, limit: number, signal?: AbortSignal):
    Promise<{ bytes: Uint8Array; complete: boolean; truncatedInStore: boolean; contentType: string }> {
  const response = await fetch(url, { credentials: "same-origin", signal });
  if (!response.ok) throw await failure(response);
  const contentType = response.headers.get("content-type") ?? "";
  const truncatedInStore = response.headers.get("x-nectoproxy-truncated") === "1";
  const reader = response.body?.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let complete = true;
  if (reader) {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
      if (size > limit) {
        complete = false;
        await reader.cancel();
        break;
      }
    }
  }
  const bytes = new Uint8Array(Math.min(size, limit));
  let at = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, Math.min(chunk.length, bytes.length - at));
    bytes.set(part, at);
    at += part.length;
    if (at >= bytes.length) break;
  }
  return { bytes, complete, truncatedInStore, contentType };
}
