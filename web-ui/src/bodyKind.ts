// Which viewer a body gets: by its content type first, then by looking at the bytes.
import { mediaType } from "./format";

export type BodyKind = "image" | "json" | "text" | "binary" | "empty";

export function looksLikeText(bytes: Uint8Array): boolean {
  const sample = bytes.subarray(0, 4096);
  let control = 0;
  for (const byte of sample) {
    if (byte === 0) return false;
    if (byte < 9 || (byte > 13 && byte < 32)) control += 1;
  }
  if (control > sample.length / 50) return false;
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(sample.length < bytes.length ? trimUtf8(sample) : sample);
    return true;
  } catch {
    return false;
  }
}

/** ``bytes`` without a UTF-8 sequence cut at its end. */
export function trimUtf8(bytes: Uint8Array): Uint8Array {
  let end = bytes.length;
  for (let back = 1; back <= 3 && end - back >= 0; back += 1) {
    const byte = bytes[end - back];
    if ((byte & 0xc0) === 0x80) continue;  // a continuation byte: look further back
    if (byte >= 0xc0) {
      const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : 2;
      if (back < need) end -= back;
    }
    break;
  }
  return bytes.subarray(0, end);
}

export function bodyKind(contentType: string | null | undefined, bytes: Uint8Array): BodyKind {
  if (bytes.length === 0) return "empty";
  const media = mediaType(contentType);
  if (media.startsWith("image/") && media !== "image/svg+xml") return "image";
  if (media === "image/svg+xml") return "text";
  const text = looksLikeText(bytes);
  if ((media.includes("json") || media === "") && text) {
    const first = new TextDecoder().decode(bytes.subarray(0, 64)).trimStart()[0];
    if (first === "{" || first === "[" || media.includes("json")) return "json";
  }
  return text ? "text" : "binary";
}

/** A hex dump: offset, 16 bytes in hex, and their printable characters. */
export function hexDump(bytes: Uint8Array, limit = bytes.length): string {
  const lines: string[] = [];
  const end = Math.min(bytes.length, limit);
  for (let offset = 0; offset < end; offset += 16) {
    const row = bytes.subarray(offset, Math.min(offset + 16, end));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const chars = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${chars}`);
  }
  return lines.join("\n");
}

/** JSON text pretty-printed, or null when it does not parse (a cut prefix, say). */
export function prettyJson(text: string): { value: unknown; pretty: string } | null {
  try {
    const value = JSON.parse(text);
    return { value, pretty: JSON.stringify(value, null, 2) };
  } catch {
    return null;
  }
}
