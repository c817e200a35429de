// A rule of the rules plugin (the JSON form of a [[rule]] table, see its README) and the form
// that edits it: one action chosen as the rule's kind, its fields as the text the inputs hold.
// The API checks the rule; the form only turns text into the JSON types the rule needs, and
// sends what it cannot read as a number as the text it is, so that the API's message names it.
import type { Rule } from "./api";

export const KINDS = ["mock", "block", "delay", "throttle", "map_remote", "map_local", "modify_request", "modify_response"] as const;
export type Kind = (typeof KINDS)[number];

export const KIND_LABELS: Record<Kind, string> = {
  mock: "Mock", block: "Block", delay: "Delay", throttle: "Throttle", map_remote: "Map remote",
  map_local: "Map local", modify_request: "Modify request", modify_response: "Modify response",
};

const MATCHERS = ["url", "host", "path", "method", "headers", "body_contains"] as const;

export interface Replacement { find: string; replace: string; regex: boolean }

/** Every input of the form, as text (or a checkbox's boolean). */
export interface RuleForm {
  name: string;
  enabled: boolean;
  priority: string;
  url: string;
  host: string;
  path: string;
  /** Methods, separated by commas or blanks. */
  method: string;
  /** Request header matchers, one "Name: pattern" a line. */
  headers: string;
  bodyContains: string;
  kind: Kind;
  // mock, block (status, body) and modify_response (status, body)
  status: string;
  /** Response headers of a mock, one "Name: value" a line. */
  mockHeaders: string;
  body: string;
  /** The body is JSON (sent as a table or array), not text. */
  bodyJson: boolean;
  bodyFile: string;
  delayMs: string;
  // delay, throttle
  ms: string;
  varianceMs: string;
  bytesPerSecond: string;
  latencyMs: string;
  // map_remote, map_local
  target: string;
  keepPath: boolean;
  stripPrefix: string;
  index: string;
  // modify_request, modify_response
  setHeaders: string;
  removeHeaders: string;
  /** Query parameters to set, one "name=value" a line. */
  setQuery: string;
  removeQuery: string;
  replace: Replacement[];
  /** The rule's other actions, which this form does not show: kept as they are. */
  others: Record<string, unknown>;
}

export function emptyForm(kind: Kind = "mock"): RuleForm {
  return {
    name: "", enabled: true, priority: "", url: "", host: "", path: "", method: "", headers: "", bodyContains: "",
    kind, status: "", mockHeaders: "", body: "", bodyJson: false, bodyFile: "", delayMs: "", ms: "", varianceMs: "",
    bytesPerSecond: "", latencyMs: "", target: "", keepPath: true, stripPrefix: "", index: "", setHeaders: "",
    removeHeaders: "", setQuery: "", removeQuery: "", replace: [], others: {},
  };
}

/** The first action of a rule: what the list shows and the form edits. */
export function ruleKind(rule: Rule): Kind | null {
  return KINDS.find((kind) => kind in rule) ?? null;
}

/** What a rule matches, in a few words for the list. */
export function matchSummary(rule: Rule): string {
  const parts: string[] = [];
  for (const key of MATCHERS) {
    const value = rule[key];
    if (value === undefined) continue;
    if (key === "method") parts.push(Array.isArray(value) ? value.join(",") : String(value));
    else if (key === "headers" && isObject(value)) parts.push(Object.entries(value).map(([k, v]) => `${k}: ${v}`).join(", "));
    else if (key === "body_contains") parts.push(`body ∋ ${JSON.stringify(value)}`);
    else parts.push(String(value));
  }
  return parts.length ? parts.join("  ") : "every request";
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const text = (value: unknown): string => (value === undefined || value === null ? "" : String(value));

function lines(map: unknown, separator: string): string {
  return isObject(map) ? Object.entries(map).map(([k, v]) => `${k}${separator}${text(v)}`).join("\n") : "";
}

function list(value: unknown): string {
  return Array.isArray(value) ? value.map(text).join(", ") : text(value);
}

function bodyText(form: RuleForm, body: unknown): void {
  if (body === undefined) return;
  form.bodyJson = typeof body !== "string";
  form.body = typeof body === "string" ? body : JSON.stringify(body, null, 2);
}

export function ruleToForm(rule: Rule): RuleForm {
  const kind = ruleKind(rule) ?? "mock";
  const form = emptyForm(kind);
  form.name = text(rule.name ?? rule.id);
  form.enabled = rule.enabled !== false;
  form.priority = text(rule.priority);
  form.url = text(rule.url);
  form.host = text(rule.host);
  form.path = text(rule.path);
  form.method = list(rule.method);
  form.headers = lines(rule.headers, ": ");
  form.bodyContains = text(rule.body_contains);
  const action = rule[kind];
  const table = isObject(action) ? action : {};
  switch (kind) {
    case "mock":
      form.status = text(table.status);
      form.mockHeaders = lines(table.headers, ": ");
      bodyText(form, table.body);
      form.bodyFile = text(table.body_file);
      form.delayMs = text(table.delay_ms);
      break;
    case "block":
      form.status = text(table.status);
      bodyText(form, table.body);
      break;
    case "delay":
      form.ms = isObject(action) ? text(table.ms) : text(action);
      form.varianceMs = text(table.variance_ms);
      break;
    case "throttle":
      form.bytesPerSecond = text(table.bytes_per_second);
      form.latencyMs = text(table.latency_ms);
      break;
    case "map_remote":
      form.target = isObject(action) ? text(table.url) : text(action);
      form.keepPath = table.keep_path !== false;
      break;
    case "map_local":
      form.target = isObject(action) ? text(table.path) : text(action);
      form.stripPrefix = text(table.strip_prefix);
      form.index = text(table.index);
      form.mockHeaders = lines(table.headers, ": ");
      break;
    case "modify_request":
    case "modify_response":
      form.setHeaders = lines(table.set_headers, ": ");
      form.removeHeaders = list(table.remove_headers);
      form.setQuery = lines(table.set_query, "=");
      form.removeQuery = list(table.remove_query);
      bodyText(form, table.body);
      form.status = text(table.status);
      form.replace = Array.isArray(table.replace)
        ? table.replace.filter(isObject).map((r) => ({ find: text(r.find), replace: text(r.replace), regex: r.regex === true }))
        : [];
      break;
  }
  for (const other of KINDS) if (other !== kind && other in rule) form.others[other] = rule[other];
  return form;
}

/** A mistake in the form the API cannot be asked about (the text is not JSON, say). */
export class FormError extends Error {
  constructor(readonly key: string, message: string) {
    super(`${key}: ${message}`);
  }
}

/** A number when the text is one; the text itself when not (the API says what is wrong). */
function numberOr(value: string): number | string | undefined {
  const trimmed = value.trim();
  if (!trimmed) return undefined;
  return /^-?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
}

function parseLines(value: string, separator: string, key: string): Record<string, string> | undefined {
  const result: Record<string, string> = {};
  value.split(/\r?\n/).forEach((line, n) => {
    if (!line.trim()) return;
    const at = line.indexOf(separator);
    if (at <= 0) throw new FormError(key, `line ${n + 1} is not "name${separator.trim() === ":" ? ": " : separator}value": ${line}`);
    result[line.slice(0, at).trim()] = line.slice(at + separator.length).trim();
  });
  return Object.keys(result).length ? result : undefined;
}

function parseList(value: string): string[] | undefined {
  const items = value.split(/[\s,]+/).filter(Boolean);
  return items.length ? items : undefined;
}

function parseBody(form: RuleForm, key: string): unknown {
  if (!form.bodyJson) return form.body || undefined;
  if (!form.body.trim()) return undefined;
  try {
    return JSON.parse(form.body);
  } catch (err) {
    throw new FormError(`${key}.body`, `not JSON (${err instanceof Error ? err.message : err})`);
  }
}

/** Drop the keys left empty, so that the rule has only what the form says. */
function compact(table: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(table).filter(([, v]) => v !== undefined));
}

function action(form: RuleForm): unknown {
  const kind = form.kind;
  switch (kind) {
    case "mock":
      return compact({ status: numberOr(form.status), headers: parseLines(form.mockHeaders, ":", "mock.headers"),
        body: parseBody(form, kind), body_file: form.bodyFile.trim() || undefined, delay_ms: numberOr(form.delayMs) });
    case "block": {
      const table = compact({ status: numberOr(form.status), body: parseBody(form, kind) });
      return Object.keys(table).length ? table : true;
    }
    case "delay": {
      const variance = numberOr(form.varianceMs);
      return variance === undefined ? numberOr(form.ms) ?? "" : compact({ ms: numberOr(form.ms), variance_ms: variance });
    }
    case "throttle":
      return compact({ bytes_per_second: numberOr(form.bytesPerSecond), latency_ms: numberOr(form.latencyMs) });
    case "map_remote":
      return form.keepPath ? form.target.trim() : { url: form.target.trim(), keep_path: false };
    case "map_local": {
      const more = compact({ strip_prefix: form.stripPrefix.trim() || undefined, index: form.index.trim() || undefined,
        headers: parseLines(form.mockHeaders, ":", "map_local.headers") });
      return Object.keys(more).length ? { path: form.target.trim(), ...more } : form.target.trim();
    }
    case "modify_request":
    case "modify_response": {
      const replace = form.replace.filter((r) => r.find).map((r) => (r.regex ? { ...r } : { find: r.find, replace: r.replace }));
      return compact({
        set_headers: parseLines(form.setHeaders, ":", `${kind}.set_headers`),
        remove_headers: parseList(form.removeHeaders),
        ...(kind === "modify_request"
          ? { set_query: parseLines(form.setQuery, "=", `${kind}.set_query`), remove_query: parseList(form.removeQuery) }
          : { status: numberOr(form.status) }),
        body: parseBody(form, kind),
        replace: replace.length ? replace : undefined,
      });
    }
  }
}

/** The rule a form describes (throws a FormError for what cannot be turned into JSON). */
export function formToRule(form: RuleForm): Rule {
  const methods = parseList(form.method);
  const rule = compact({
    name: form.name.trim() || undefined,
    enabled: form.enabled ? undefined : false,
    priority: numberOr(form.priority),
    url: form.url.trim() || undefined,
    host: form.host.trim() || undefined,
    path: form.path.trim() || undefined,
    method: methods && methods.length === 1 ? methods[0] : methods,
    headers: parseLines(form.headers, ":", "headers"),
    body_contains: form.bodyContains || undefined,
  });
  const others = Object.fromEntries(Object.entries(form.others).filter(([key]) => key !== form.kind));
  return { ...rule, [form.kind]: action(form), ...others };
}

/** Where an API refusal of a rule points: the rule's key it names (``mock``, ``url``...), and
 * the message without the rule's position in the file, which the form does not show (the name
 * is quoted as Python's repr quotes it). */
export function ruleError(error: { message: string; field?: string | null }): { key: string | null; message: string } {
  const message = error.message.replace(/^rules\[\d+\](?: \(name (?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\))?(?:: |\.)/, "");
  const fromField = /^rules\[\d+\]\.(\w+)/.exec(error.field ?? "");
  if (fromField) return { key: fromField[1], message };
  const named = /^(\w+)[:.]/.exec(message);
  const keys: readonly string[] = [...MATCHERS, ...KINDS, "name", "priority", "enabled"];
  return { key: named && keys.includes(named[1]) ? named[1] : null, message };
}

/** A settings refusal's field (``hosts[2]``, ``profiles.p.loss``) as the top key it is under. */
export function settingsKey(error: { field: string | null }): string | null {
  return error.field ? /^[^.[]+/.exec(error.field)?.[0] ?? null : null;
}
