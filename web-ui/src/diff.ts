// Line diffs for comparing two flows: Myers' O(ND) algorithm ("An O(ND) Difference Algorithm
// and Its Variations", 1986) on lines, after the common start and end are set aside. The work
// and the memory are bounded (lines, edits, steps), so two huge bodies cannot freeze the
// page: past a bound the answer says so instead of a diff.

export type DiffOp =
  | { kind: "same"; a: number; b: number; text: string }
  | { kind: "del"; a: number; text: string }
  | { kind: "add"; b: number; text: string };

export type DiffResult = { ops: DiffOp[]; tooLarge: null } | { ops: null; tooLarge: string };

export interface DiffLimits {
  /** Lines of each side left after the common start and end. */
  maxLines: number;
  /** Lines deleted plus lines added (the trace Myers keeps grows with their square). */
  maxEdits: number;
  /** Steps through the edit graph. */
  maxSteps: number;
}

export const LIMITS: DiffLimits = { maxLines: 200_000, maxEdits: 2_000, maxSteps: 20_000_000 };

export function splitLines(text: string): string[] {
  if (!text) return [];
  const lines = text.split(/\r?\n/);
  if (lines[lines.length - 1] === "") lines.pop();  // a final line end starts no line
  return lines;
}

export function diffLines(a: string[], b: string[], limits: DiffLimits = LIMITS): DiffResult {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start += 1;
  let end = 0;
  while (end < a.length - start && end < b.length - start && a[a.length - 1 - end] === b[b.length - 1 - end]) end += 1;
  const n = a.length - start - end;
  const m = b.length - start - end;
  if (n > limits.maxLines || m > limits.maxLines) {
    return { ops: null, tooLarge: `more than ${limits.maxLines.toLocaleString("en-US")} lines differ in place` };
  }
  const middle = myers(a, b, start, n, m, limits);
  if (typeof middle === "string") return { ops: null, tooLarge: middle };
  const ops: DiffOp[] = [];
  for (let i = 0; i < start; i += 1) ops.push({ kind: "same", a: i, b: i, text: a[i] });
  ops.push(...middle);
  for (let i = end; i > 0; i -= 1) {
    ops.push({ kind: "same", a: a.length - i, b: b.length - i, text: a[a.length - i] });
  }
  return { ops, tooLarge: null };
}

/** Lines as small integers (equal lines, equal numbers), so the inner loop compares ints. */
function intern(a: string[], b: string[], start: number, n: number, m: number): [Int32Array, Int32Array] {
  const ids = new Map<string, number>();
  const code = (line: string) => {
    let id = ids.get(line);
    if (id === undefined) {
      id = ids.size;
      ids.set(line, id);
    }
    return id;
  };
  const x = new Int32Array(n);
  const y = new Int32Array(m);
  for (let i = 0; i < n; i += 1) x[i] = code(a[start + i]);
  for (let j = 0; j < m; j += 1) y[j] = code(b[start + j]);
  return [x, y];
}

function myers(a: string[], b: string[], start: number, n: number, m: number, limits: DiffLimits): DiffOp[] | string {
  if (n === 0 && m === 0) return [];
  const [x, y] = intern(a, b, start, n, m);
  const max = n + m;
  const offset = max + 1;
  const v = new Int32Array(2 * max + 3);
  // trace[d]: v[-d-1 .. d+1] as it was before round d (all backtracking reads of round d)
  const trace: Int32Array[] = [];
  let steps = 0;
  let found = -1;
  for (let d = 0; d <= max && found < 0; d += 1) {
    if (d > limits.maxEdits) return `more than ${limits.maxEdits.toLocaleString("en-US")} lines differ`;
    trace.push(v.slice(offset - d - 1, offset + d + 2));
    for (let k = -d; k <= d; k += 2) {
      let col = k === -d || (k !== d && v[offset + k - 1] < v[offset + k + 1]) ? v[offset + k + 1] : v[offset + k - 1] + 1;
      let row = col - k;
      const from = col;
      while (col < n && row < m && x[col] === y[row]) { col += 1; row += 1; }
      steps += 1 + col - from;
      v[offset + k] = col;
      if (col >= n && row >= m) { found = d; break; }
    }
    if (steps > limits.maxSteps) return "the bodies are too different to compare line by line here";
  }
  const ops: DiffOp[] = [];
  let col = n;
  let row = m;
  for (let d = found; d >= 0; d -= 1) {
    const saved = trace[d];
    const at = (k: number) => saved[k + d + 1];
    const k = col - row;
    const prevK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1;
    const prevCol = d === 0 ? 0 : at(prevK);
    const prevRow = d === 0 ? 0 : prevCol - prevK;
    while (col > prevCol && row > prevRow) {
      col -= 1; row -= 1;
      ops.push({ kind: "same", a: start + col, b: start + row, text: a[start + col] });
    }
    if (d > 0) {
      if (col === prevCol) ops.push({ kind: "add", b: start + prevRow, text: b[start + prevRow] });
      else ops.push({ kind: "del", a: start + prevCol, text: a[start + prevCol] });
    }
    col = prevCol; row = prevRow;
  }
  return ops.reverse();
}

/** A row of the side-by-side view: a line of each side (null: none there), or a gap. */
export type SideRow =
  | { kind: "same" | "changed"; left: { n: number; text: string } | null; right: { n: number; text: string } | null }
  | { kind: "skip"; lines: number };

/** A line of the unified view. */
export type UnifiedRow = { kind: "same" | "del" | "add"; a: number | null; b: number | null; text: string } | { kind: "skip"; lines: number };

/** Runs of unchanged lines longer than twice ``context`` shrink to ``context`` on each side. */
function collapse<T>(ops: DiffOp[], context: number, emit: (op: DiffOp) => T, skip: (lines: number) => T): T[] {
  const out: T[] = [];
  let i = 0;
  while (i < ops.length) {
    if (ops[i].kind !== "same") { out.push(emit(ops[i])); i += 1; continue; }
    let j = i;
    while (j < ops.length && ops[j].kind === "same") j += 1;
    const keepBefore = i === 0 ? 0 : context;
    const keepAfter = j === ops.length ? 0 : context;
    if (j - i > keepBefore + keepAfter + 1) {
      for (let t = i; t < i + keepBefore; t += 1) out.push(emit(ops[t]));
      out.push(skip(j - i - keepBefore - keepAfter));
      for (let t = j - keepAfter; t < j; t += 1) out.push(emit(ops[t]));
    } else {
      for (let t = i; t < j; t += 1) out.push(emit(ops[t]));
    }
    i = j;
  }
  return out;
}

export function unifiedRows(ops: DiffOp[], context = 3): UnifiedRow[] {
  return collapse<UnifiedRow>(ops, context, (op) => ({
    kind: op.kind, a: op.kind === "add" ? null : op.a + 1, b: op.kind === "del" ? null : op.b + 1, text: op.text,
  }), (lines) => ({ kind: "skip", lines }));
}

/** Deleted and added lines next to each other pair up as "changed" rows. */
export function sideRows(ops: DiffOp[], context = 3): SideRow[] {
  const rows: SideRow[] = [];
  let dels: { n: number; text: string }[] = [];
  let adds: { n: number; text: string }[] = [];
  const flush = () => {
    for (let i = 0; i < Math.max(dels.length, adds.length); i += 1) {
      rows.push({ kind: "changed", left: dels[i] ?? null, right: adds[i] ?? null });
    }
    dels = [];
    adds = [];
  };
  for (const row of unifiedRows(ops, context)) {
    if (row.kind === "del") dels.push({ n: row.a ?? 0, text: row.text });
    else if (row.kind === "add") adds.push({ n: row.b ?? 0, text: row.text });
    else {
      flush();
      if (row.kind === "skip") rows.push(row);
      else rows.push({ kind: "same", left: { n: row.a ?? 0, text: row.text }, right: { n: row.b ?? 0, text: row.text } });
    }
  }
  flush();
  return rows;
}

/** JSON text pretty-printed with its object keys sorted, so that only values and structure
 * differ; null when it does not parse. */
export function normalisedJson(text: string): string | null {
  const sort = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(sort);
    if (value && typeof value === "object") {
      const record = value as Record<string, unknown>;
      return Object.fromEntries(Object.keys(record).sort().map((key) => [key, sort(record[key])]));
    }
    return value;
  };
  try {
    return JSON.stringify(sort(JSON.parse(text)), null, 2);
  } catch {
    return null;
  }
}
