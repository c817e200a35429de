// Reading heads: header lookup, query parameters, cookies, form fields, and what changed
// between a head as received and as sent.
import type { Headers } from "./api";

export function header(headers: Headers | null | undefined, name: string): string | null {
  const wanted = name.toLowerCase();
  for (const [key, value] of headers ?? []) if (key.toLowerCase() === wanted) return value;
  return null;
}

export function headerValues(headers: Headers | null | undefined, name: string): string[] {
  const wanted = name.toLowerCase();
  return (headers ?? []).filter(([key]) => key.toLowerCase() === wanted).map(([, value]) => value);
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, " "));
  } catch {
    return text;
  }
}

/** The query of a URL as [name, value] pairs in order (repeats kept, %-escapes undone). */
export function queryParams(url: string): [string, string][] {
  const start = url.indexOf("?");
  if (start < 0) return [];
  const end = url.indexOf("#", start);
  return formFields(url.slice(start + 1, end < 0 ? undefined : end));
}

/** An application/x-www-form-urlencoded text as pairs. */
export function formFields(text: string): [string, string][] {
  if (!text) return [];
  return text.split("&").filter(Boolean).map((part) => {
    const eq = part.indexOf("=");
    return eq < 0 ? [decode(part), ""] : [decode(part.slice(0, eq)), decode(part.slice(eq + 1))];
  });
}

/** The cookies of every Cookie header of a request, in order. */
export function requestCookies(headers: Headers | null | undefined): [string, string][] {
  const found: [string, string][] = [];
  for (const value of headerValues(headers, "cookie")) {
    for (const part of value.split(";")) {
      const item = part.trim();
      if (!item) continue;
      const eq = item.indexOf("=");
      found.push(eq < 0 ? ["", item] : [item.slice(0, eq).trim(), item.slice(eq + 1).trim()]);
    }
  }
  return found;
}

export interface SetCookie {
  name: string;
  value: string;
  attributes: [string, string][];
}

/** Each Set-Cookie header of a response: name, value and attributes (Path, HttpOnly, ...). */
export function responseCookies(headers: Headers | null | undefined): SetCookie[] {
  return headerValues(headers, "set-cookie").map((line) => {
    const [first, ...rest] = line.split(";");
    const eq = first.indexOf("=");
    const attributes = rest.map((part): [string, string] => {
      const item = part.trim();
      const at = item.indexOf("=");
      return at < 0 ? [item, ""] : [item.slice(0, at).trim(), item.slice(at + 1).trim()];
    }).filter(([name]) => name);
    return {
      name: eq < 0 ? "" : first.slice(0, eq).trim(),
      value: (eq < 0 ? first : first.slice(eq + 1)).trim(),
      attributes,
    };
  });
}

export type HeaderChange = "same" | "added" | "removed" | "changed";

/** The sent head against the received one: each sent line marked added or changed (by name,
 * in order among repeats), and the received lines that were dropped. */
export function diffHeaders(received: Headers, sent: Headers): { sent: [string, string, HeaderChange][]; removed: Headers } {
  const pool = new Map<string, string[]>();
  for (const [name, value] of received) {
    const key = name.toLowerCase();
    pool.set(key, [...(pool.get(key) ?? []), value]);
  }
  const result: [string, string, HeaderChange][] = sent.map(([name, value]) => {
    const values = pool.get(name.toLowerCase());
    if (!values || values.length === 0) return [name, value, "added"];
    const exact = values.indexOf(value);
    if (exact >= 0) {
      values.splice(exact, 1);
      return [name, value, "same"];
    }
    values.shift();
    return [name, value, "changed"];
  });
  const sentNames = new Set(sent.map(([name]) => name.toLowerCase()));
  const removed = received.filter(([name]) => !sentNames.has(name.toLowerCase()));
  return { sent: result, removed };
}

export interface HeaderRow { name: string; value: string }

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The editor's header rows as pairs: blank rows are skipped; a row without a name, or with
 * a name HTTP does not allow, is an error naming it. Values are trimmed (HTTP ignores the
 * spaces around them). */
export function rowsToHeaders(rows: HeaderRow[]): Headers {
  const result: Headers = [];
  rows.forEach(({ name, value }, index) => {
    const key = name.trim();
    if (!key && !value.trim()) return;
    if (!key) throw new Error(`header ${index + 1} has a value but no name`);
    if (!TOKEN.test(key)) throw new Error(`header ${index + 1}: ${JSON.stringify(key)} is not a valid header name`);
    result.push([key, value.trim()]);
  });
  return result;
}

/** Text pasted into the editor that holds "Name: value" lines, as rows (blank lines skipped);
 * null for anything else (a plain value is pasted as it is). */
export function pastedHeaderRows(text: string): HeaderRow[] | null {
  const lines = text.split(/\r?\n/).filter((line) => line.trim());
  if (lines.length < 2 && !/^[^\s:]+:/.test(lines[0] ?? "")) return null;
  const rows: HeaderRow[] = [];
  for (const line of lines) {
    const colon = line.indexOf(":", line.startsWith(":") ? 1 : 0);
    if (colon <= 0 || !TOKEN.test(line.slice(0, colon).trim())) return null;
    rows.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
  }
  return rows;
}

/** Header lines as text ("Name: value" per line), as the breakpoint editor shows them. */
export function headersText(headers: Headers): string {
  return headers.map(([name, value]) => `${name}: ${value}`).join("\n");
}

/** Text of "Name: value" lines back into pairs; blank lines are skipped, a line without a
 * colon is an error naming it. */
export function parseHeadersText(text: string): Headers {
  const result: Headers = [];
  text.split(/\r?\n/).forEach((line, index) => {
    if (!line.trim()) return;
    const colon = line.indexOf(":", line.startsWith(":") ? 1 : 0);
    if (colon <= 0) throw new Error(`line ${index + 1} is not "Name: value": ${line}`);
    result.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  });
  return result;
}
