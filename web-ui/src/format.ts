// How numbers look in the UI: sizes, durations, times, status classes.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** "1.50" -> "1.5", "2.00" -> "2"; integers stay as they are. */
function trimZeros(text: string): string {
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

/** 0 -> "0 B", 1536 -> "1.5 KiB", 10 MiB -> "10 MiB"; null (not known yet) -> "". */
export function formatSize(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes) || bytes < 0) return "";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${value} B`;
  const text = value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  return `${trimZeros(text)} ${UNITS[unit]}`;
}

/** Milliseconds: 0.4 -> "0.4 ms", 41.23 -> "41 ms", 1520 -> "1.52 s", 125000 -> "2 min 5 s". */
export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "";
  if (ms < 1) return `${trimZeros(ms.toFixed(1))} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${trimZeros(seconds.toFixed(seconds < 10 ? 2 : 1))} s`;
  const minutes = Math.floor(seconds / 60);
  const rest = Math.round(seconds - minutes * 60);
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}

/** Unix seconds -> "HH:MM:SS.mmm" in local time. */
export function formatClock(unixSeconds: number): string {
  const date = new Date(unixSeconds * 1000);
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

export function formatDateTime(unixSeconds: number): string {
  const date = new Date(unixSeconds * 1000);
  return `${date.toLocaleDateString()} ${formatClock(unixSeconds)}`;
}

/** "2xx" .. "5xx", "error" for a failed flow, "pending" with no status yet. */
export function statusClass(status: number | null, error: string | null): string {
  if (status !== null && status >= 100 && status < 600) return `${Math.floor(status / 100)}xx`;
  return error ? "error" : "pending";
}

/** The media type without parameters: "application/json; charset=utf-8" -> "application/json". */
export function mediaType(contentType: string | null | undefined): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

/** An HTTP version as the store keeps it, named as people say it: "HTTP/2.0" -> "HTTP/2",
 * "HTTP/3.0" -> "HTTP/3" (those have no minor versions); HTTP/1.x as it is. */
export function versionName(httpVersion: string): string {
  const match = /^HTTP\/([23])(\.0)?$/i.exec(httpVersion.trim());
  return match ? `HTTP/${match[1]}` : httpVersion;
}

/** The short name of the list's protocol column, as ALPN spells it: "h2", "h3", "h1.1". */
export function protocolName(httpVersion: string): string {
  return versionName(httpVersion).replace(/^HTTP\//i, "h");
}
