// What "compare two flows" compares: the heads as lines, and the bodies as lines of text
// (JSON normalised first) or, for anything else, by size and sha256.
import type { FlowRecord } from "./api";
import { bodyKind, trimUtf8 } from "./bodyKind";
import { diffLines, normalisedJson, splitLines, type DiffResult } from "./diff";

/** A head as lines: the request or status line, then "Name: value" in wire order. */
export function headLines(flow: FlowRecord, direction: "request" | "response"): string[] {
  if (direction === "request") {
    return [`${flow.method} ${flow.url} ${flow.httpVersion}`, ...flow.requestHeaders.map(([n, v]) => `${n}: ${v}`)];
  }
  if (!flow.responseHeaders) return [flow.error ? `(no response: ${flow.error})` : "(no response)"];
  return [`${flow.httpVersion} ${flow.status ?? ""} ${flow.reason ?? ""}`.trimEnd(), ...flow.responseHeaders.map(([n, v]) => `${n}: ${v}`)];
}

/** A body as fetched for comparing: a prefix of the decoded bytes, and the whole size. */
export interface LoadedBody {
  bytes: Uint8Array;
  complete: boolean;
  contentType: string | null;
  size: number;
}

export interface Digest {
  size: number;
  sha256: string;
  /** The digest is of the first ``bytes.length`` bytes only. */
  partial: boolean;
}

export type BodyComparison =
  | { kind: "empty" }
  | { kind: "lines"; format: "json" | "text"; result: DiffResult; partial: boolean; lines: [number, number] }
  | { kind: "binary"; identical: boolean; left: Digest; right: Digest };

export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function text(body: LoadedBody): string {
  return new TextDecoder().decode(body.complete ? body.bytes : trimUtf8(body.bytes));
}

export async function compareBodies(left: LoadedBody, right: LoadedBody): Promise<BodyComparison> {
  const kinds = [bodyKind(left.contentType, left.bytes), bodyKind(right.contentType, right.bytes)];
  if (kinds[0] === "empty" && kinds[1] === "empty") return { kind: "empty" };
  const textual = kinds.every((kind) => kind === "text" || kind === "json" || kind === "empty");
  if (!textual) {
    const digest = async (body: LoadedBody): Promise<Digest> => ({
      size: body.size, sha256: await sha256(body.bytes), partial: !body.complete,
    });
    const [a, b] = [await digest(left), await digest(right)];
    return { kind: "binary", identical: a.size === b.size && a.sha256 === b.sha256 && !a.partial, left: a, right: b };
  }
  let a = text(left);
  let b = text(right);
  let format: "json" | "text" = "text";
  if (kinds.includes("json") && left.complete && right.complete) {
    const [ja, jb] = [a ? normalisedJson(a) : "", b ? normalisedJson(b) : ""];
    if (ja !== null && jb !== null) {
      [a, b] = [ja, jb];
      format = "json";
    }
  }
  const [la, lb] = [splitLines(a), splitLines(b)];
  return { kind: "lines", format, result: diffLines(la, lb), partial: !left.complete || !right.complete, lines: [la.length, lb.length] };
}
