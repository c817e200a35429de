// The forms of the throttle plugin's network profile and of the pass-through hosts, and the
// settings values (/api/settings/throttle, /api/settings/passthrough) they stand for. As with
// rules, text that is not a number is sent as it is, so that the API's message names it.

export const PROFILE_FIELDS = ["download_bps", "upload_bps", "latency_ms", "jitter_ms", "loss"] as const;
export type ProfileField = (typeof PROFILE_FIELDS)[number];

export interface CustomProfile extends Record<ProfileField, string> {
  name: string;
  /** "" = the plugin-wide loss mode. */
  loss_mode: string;
}

export interface HostProfile { host: string; profile: string }

export interface ThrottleForm {
  profile: string;
  hosts: HostProfile[];
  profiles: CustomProfile[];
  lossMode: string;
  seed: string;
}

export interface Preset { name: string; [key: string]: unknown }

const text = (value: unknown): string => (value === undefined || value === null ? "" : String(value));

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function numberOr(value: string): number | string | undefined {
  const trimmed = value.trim();
  if (!trimmed) return undefined;
  return /^-?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
}

export function emptyProfile(name = ""): CustomProfile {
  return { name, download_bps: "", upload_bps: "", latency_ms: "", jitter_ms: "", loss: "", loss_mode: "" };
}

export function throttleToForm(value: Record<string, unknown>): ThrottleForm {
  const hosts = isObject(value.hosts) ? Object.entries(value.hosts).map(([host, profile]) => ({ host, profile: text(profile) })) : [];
  const profiles = isObject(value.profiles)
    ? Object.entries(value.profiles).map(([name, table]) => {
      const profile = emptyProfile(name);
      if (isObject(table)) {
        for (const field of PROFILE_FIELDS) profile[field] = text(table[field]);
        profile.loss_mode = text(table.loss_mode);
      }
      return profile;
    })
    : [];
  return { profile: text(value.profile), hosts, profiles, lossMode: text(value.loss_mode), seed: text(value.seed) };
}

/** The value to PUT: only what the form says (read-only keys are the server's). */
export function formToThrottle(form: ThrottleForm): Record<string, unknown> {
  const value: Record<string, unknown> = {};
  if (form.profile.trim()) value.profile = form.profile.trim();
  const hosts = form.hosts.filter((h) => h.host.trim());
  if (hosts.length) value.hosts = Object.fromEntries(hosts.map((h) => [h.host.trim(), h.profile.trim()]));
  const profiles = form.profiles.filter((p) => p.name.trim());
  if (profiles.length) {
    value.profiles = Object.fromEntries(profiles.map((p) => {
      const table: Record<string, unknown> = {};
      for (const field of PROFILE_FIELDS) {
        const number = numberOr(p[field]);
        if (number !== undefined) table[field] = number;
      }
      if (p.loss_mode) table.loss_mode = p.loss_mode;
      return [p.name.trim(), table];
    }));
  }
  if (form.lossMode) value.loss_mode = form.lossMode;
  const seed = numberOr(form.seed);
  if (seed !== undefined) value.seed = seed;
  return value;
}

/** A preset in a few words: "97 KiB/s down, 41 KiB/s up, 400±100 ms". */
export function describePreset(preset: Preset): string {
  if (preset.offline) return "offline: every request fails";
  const rate = (bps: unknown) => (typeof bps === "number" && bps > 0 ? `${Math.round(bps / 1024)} KiB/s` : "unlimited");
  const parts = [`${rate(preset.download_bps)} down`, `${rate(preset.upload_bps)} up`];
  if (typeof preset.latency_ms === "number" && preset.latency_ms > 0) {
    parts.push(`${preset.latency_ms}${typeof preset.jitter_ms === "number" && preset.jitter_ms > 0 ? `±${preset.jitter_ms}` : ""} ms`);
  }
  if (typeof preset.loss === "number" && preset.loss > 0) parts.push(`${Math.round(preset.loss * 100)}% loss`);
  return parts.join(", ");
}

/** The pass-through hosts to PUT: the rows typed, blanks left out. Where a refused host is
 * (`hosts[2]`) counts in this list, so the form maps it back to its row with ``hostRow``. */
export function hostsToPut(rows: string[]): { hosts: string[]; rowOf: number[] } {
  const hosts: string[] = [];
  const rowOf: number[] = [];
  rows.forEach((row, n) => {
    if (!row.trim()) return;
    hosts.push(row.trim());
    rowOf.push(n);
  });
  return { hosts, rowOf };
}

/** The form row a refusal's field (`hosts[2]`) points at, or null. */
export function hostRow(field: string | null, rowOf: number[]): number | null {
  const match = /^hosts\[(\d+)\]/.exec(field ?? "");
  if (!match) return null;
  return rowOf[Number(match[1])] ?? null;
}
