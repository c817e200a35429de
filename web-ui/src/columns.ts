// The traffic list's columns: which exist, which are shown, how wide, and the sort; the user's
// choices are kept in localStorage. Pure functions, so the tests need no DOM.

/** The API's `sort` values (GET /api/traffic?sort=...). */
export type SortKey = "status" | "host" | "method" | "size" | "duration";

export interface Column {
  id: string;
  label: string;
  /** Width in pixels when the user has not set one. */
  width: number;
  /** What a click on the header sorts by (null: arrival order, the default; "none": not sortable). */
  sort: SortKey | null | "none";
}

export const COLUMNS: readonly Column[] = [
  { id: "num", label: "#", width: 64, sort: null },
  { id: "method", label: "Method", width: 66, sort: "method" },
  { id: "status", label: "Status", width: 54, sort: "status" },
  { id: "host", label: "Host", width: 180, sort: "host" },
  { id: "path", label: "Path", width: 320, sort: "none" },
  { id: "type", label: "Type", width: 128, sort: "none" },
  { id: "size", label: "Size", width: 72, sort: "size" },
  { id: "duration", label: "Duration", width: 80, sort: "duration" },
  { id: "proto", label: "Protocol", width: 88, sort: "none" },
  { id: "time", label: "Time", width: 104, sort: null },
];

export const MIN_WIDTH = 32;
const KEY = "nectoproxy.columns";

export interface Sort {
  key: SortKey;
  descending: boolean;
}

export interface ColumnState {
  widths: Record<string, number>;
  hidden: string[];
  sort: Sort | null;
}

export const DEFAULT_STATE: ColumnState = { widths: {}, hidden: [], sort: null };

const SORT_KEYS = new Set<string>(COLUMNS.flatMap((c) => (c.sort && c.sort !== "none" ? [c.sort] : [])));

/** The state kept in ``storage`` (anything unreadable or unknown is left out). */
export function loadColumns(storage: Pick<Storage, "getItem"> = localStorage): ColumnState {
  let raw: unknown;
  try {
    raw = JSON.parse(storage.getItem(KEY) ?? "null");
  } catch {
    return DEFAULT_STATE;
  }
  if (!raw || typeof raw !== "object") return DEFAULT_STATE;
  const value = raw as Partial<Record<keyof ColumnState, unknown>>;
  const known = new Set(COLUMNS.map((c) => c.id));
  const widths: Record<string, number> = {};
  if (value.widths && typeof value.widths === "object") {
    for (const [id, width] of Object.entries(value.widths as Record<string, unknown>)) {
      if (known.has(id) && typeof width === "number" && Number.isFinite(width)) widths[id] = Math.max(MIN_WIDTH, Math.round(width));
    }
  }
  const hidden = Array.isArray(value.hidden) ? value.hidden.filter((id): id is string => typeof id === "string" && known.has(id)) : [];
  const sort = value.sort as Partial<Sort> | null | undefined;
  const validSort = sort && typeof sort.key === "string" && SORT_KEYS.has(sort.key)
    ? { key: sort.key as SortKey, descending: !!sort.descending } : null;
  return { widths, hidden: hidden.length < COLUMNS.length ? hidden : [], sort: validSort };
}

export function saveColumns(state: ColumnState, storage: Pick<Storage, "setItem"> = localStorage): void {
  storage.setItem(KEY, JSON.stringify(state));
}

/** Click on a sortable header: ascending, then descending, then back to arrival order. */
export function nextSort(current: Sort | null, key: SortKey): Sort | null {
  if (!current || current.key !== key) return { key, descending: false };
  return current.descending ? null : { key, descending: true };
}

export function visibleColumns(state: ColumnState, compact = false): Column[] {
  const shown = COLUMNS.filter((c) => !state.hidden.includes(c.id));
  return compact ? shown.slice(0, 5) : shown;
}

export function widthOf(state: ColumnState, column: Column): number {
  return state.widths[column.id] ?? column.width;
}

/** The column that takes the room the others leave (the path, or the last one shown): it has
 * no width of its own, so the list fits beside the sessions panel or the detail. */
export function stretchColumn(state: ColumnState, compact = false): string | undefined {
  const columns = visibleColumns(state, compact);
  return columns.some((c) => c.id === "path") ? "path" : columns[columns.length - 1]?.id;
}

/** The rows' CSS grid: each column at its width, the stretching one taking what is left. */
export function gridTemplate(state: ColumnState, compact = false): string {
  const stretch = stretchColumn(state, compact);
  return visibleColumns(state, compact)
    .map((c) => (c.id === stretch ? `minmax(${2 * MIN_WIDTH}px, 1fr)` : `${widthOf(state, c)}px`)).join(" ");
}

export function resized(state: ColumnState, id: string, width: number): ColumnState {
  return { ...state, widths: { ...state.widths, [id]: Math.max(MIN_WIDTH, Math.round(width)) } };
}

/** Show or hide a column (the last one shown stays). */
export function toggled(state: ColumnState, id: string): ColumnState {
  if (state.hidden.includes(id)) return { ...state, hidden: state.hidden.filter((h) => h !== id) };
  if (COLUMNS.length - state.hidden.length <= 1) return state;
  return { ...state, hidden: [...state.hidden, id] };
}

/** The summary field a sort reads, to make a cursor from a row (the API's `[key, seq]`). */
export const SORT_FIELDS: Record<SortKey, "status" | "host" | "method" | "responseSize" | "duration"> = {
  status: "status", host: "host", method: "method", size: "responseSize", duration: "duration",
};
