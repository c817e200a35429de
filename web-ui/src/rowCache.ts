// The traffic list's rows: a sparse window over a session of any size, paged in with the API's
// keyset cursors (a flow's `seq`) as the user scrolls, and evicted far from the viewport.
//
// Rows live in *slots*: slot 0 is the newest flow when the list was loaded, growing downwards
// (older); flows that arrive later take slots -1, -2, ... (`shift` of them). The display index
// is `slot + shift`, so new flows never move the slots of rows already loaded.
//
// A page is fetched from a neighbour whose seq is known (the row above: newer-first with its
// seq as cursor; the row below: oldest-first), from either end of the list (no cursor), or,
// for a jump far from anything loaded, from a cursor interpolated between the nearest known
// seqs. Rows placed by interpolation are *approximate*: when an exact load meets one of them
// again, the approximate run moves to where the exact one says it belongs.
//
// A list sorted by a column (`sortCursor` given) pages the same way with the API's `[key, seq]`
// cursors, made from the neighbouring row. A position cannot be guessed from a key, so a jump
// far from anything loaded asks the API for the page at that position (its rows approximate:
// flows that arrived since the load may have shifted them). New flows are not inserted (that would move the rows under the user's eyes, as sorting them in
// would): they are counted in `newFlows`, and the list shows them when it is loaded again.
import type { FlowSummary, PageRequest, TrafficPage } from "./api";

export const PAGE = 200;
/** The largest page the API gives. */
const MAX_LIMIT = 1000;
const MAX_ATTEMPTS = 3;
const MAX_IN_FLIGHT = 4;

export type FetchPage = (request: PageRequest) => Promise<TrafficPage>;

export interface Plan {
  request: PageRequest;
  /** The slot of the first entry, and the direction the next ones go. */
  place: number;
  step: 1 | -1;
  approximate: boolean;
}

interface Cell {
  flow: FlowSummary;
  approximate: boolean;
  /** A sorted list's cursor after the row, as it was loaded: a live update may change the
   * row's key (a status arrives), not where the API sorted it. */
  cursor?: string;
}

export class RowCache {
  private cells = new Map<number, Cell>();
  private slotOf = new Map<string, number>();
  private inFlight = new Set<number>();
  private attempts = new Map<number, number>();
  private listeners = new Set<() => void>();
  private queued: FlowSummary[] | null = [];
  private refreshing: Promise<void> | null = null;
  private refreshAgain = false;
  private center = 0;
  private closed = false;
  /** Flows added above slot 0 since the load. */
  shift = 0;
  /** The newest seq in the list: flows above it are new. */
  maxSeq = 0;
  /** Bumped on every change, for React. */
  version = 0;
  /** Two exact loads disagreed about where a flow is: flows were deleted or added behind
   * the count (the list should be loaded again). */
  inconsistent = false;
  /** Rows below the top at the load (slots 0..base-1); null while unknown (a search). */
  private base: number | null;
  /** With an unknown base: one past the last slot loaded, and whether that is the end. */
  private end = 0;
  private done = false;
  /** Sorted: flows that arrived since the load (not shown until it is loaded again). */
  newFlows = 0;

  constructor(
    private readonly fetchPage: FetchPage,
    base: number | null,
    /** Whether live flows can be shown as they come (no filter, no search). */
    private readonly unfiltered: boolean,
    private readonly maxRows = 20000,
    /** A sorted list's cursor after a row (null: arrival order, cursors are seqs). */
    private readonly sortCursor: ((flow: FlowSummary) => string) | null = null,
  ) {
    this.base = base;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.closed = true;
    this.listeners.clear();
  }

  private changed(): void {
    this.version += 1;
    for (const listener of this.listeners) listener();
  }

  /** How many rows the list has (as far as known). */
  count(): number {
    if (this.base !== null) return this.base + this.shift;
    return this.shift + this.end + (this.done ? 0 : PAGE);
  }

  /** Whether the count is exact (false while a search has more pages to read). */
  countKnown(): boolean {
    return this.base !== null || this.done;
  }

  rowAt(index: number): FlowSummary | undefined {
    return this.cells.get(index - this.shift)?.flow;
  }

  indexOf(id: string): number | undefined {
    const slot = this.slotOf.get(id);
    return slot === undefined ? undefined : slot + this.shift;
  }

  loadedRows(): number {
    return this.cells.size;
  }

  /** The first page (and the last, when the list is long), then the live queue. */
  async start(): Promise<void> {
    const top = await this.fetchPage({ order: "newest", limit: PAGE });
    if (this.closed) return;
    this.place({ request: { order: "newest", limit: PAGE }, place: 0, step: 1, approximate: false }, top);
    this.maxSeq = top.entries.length ? top.entries[0].seq : 0;
    if (this.sortCursor) {  // the newest flow, to tell new flows from updates
      const newest = await this.fetchPage({ order: "newest", limit: 1, arrival: true });
      if (this.closed) return;
      this.maxSeq = newest.entries.length ? newest.entries[0].seq : 0;
    }
    if (this.base !== null && this.base > PAGE) {
      const request: PageRequest = { order: "oldest", limit: PAGE };
      const bottom = await this.fetchPage(request);
      if (this.closed) return;
      this.place({ request, place: this.base - 1, step: -1, approximate: false }, bottom);
    }
    const queued = this.queued ?? [];
    this.queued = null;
    if (queued.length) this.live(queued);
    this.changed();
  }

  // -- paging -------------------------------------------------------------------------------

  private bounds(): [number, number] {
    const high = this.base !== null ? this.base - 1 : this.done ? this.end - 1 : Number.POSITIVE_INFINITY;
    return [-this.shift, high];
  }

  /** Load what display rows ``from``..``to`` need (call it as the viewport moves). */
  ensure(from: number, to: number): void {
    if (this.queued !== null || this.closed) return;
    this.center = (from + to) / 2 - this.shift;
    const [low, high] = this.bounds();
    const first = Math.floor((Math.max(from - this.shift, low)) / PAGE);
    const last = Math.floor(Math.min(to - this.shift, high) / PAGE);
    for (let page = first; page <= last; page += 1) {
      if (this.inFlight.size >= MAX_IN_FLIGHT) break;
      if (this.inFlight.has(page) || (this.attempts.get(page) ?? 0) >= MAX_ATTEMPTS) continue;
      const plan = this.plan(page);
      if (plan) void this.load(page, plan);
    }
  }

  private async load(page: number, plan: Plan): Promise<void> {
    this.inFlight.add(page);
    this.attempts.set(page, (this.attempts.get(page) ?? 0) + 1);
    try {
      const result = await this.fetchPage(plan.request);
      if (this.closed) return;
      this.place(plan, result);
      if (this.missing(page) === null) this.attempts.delete(page);
      this.evict();
    } catch {
      // a failed page stays missing; the next ensure() retries it (up to MAX_ATTEMPTS)
    } finally {
      this.inFlight.delete(page);
      if (!this.closed) this.changed();
    }
  }

  /** The first and last missing slot of a page, or null when it is complete. */
  private missing(page: number): [number, number] | null {
    const [low, high] = this.bounds();
    const start = Math.max(page * PAGE, low);
    const stop = Math.min(page * PAGE + PAGE - 1, high);
    let first: number | null = null;
    let last = start;
    for (let slot = start; slot <= stop; slot += 1) {
      if (!this.cells.has(slot)) {
        if (first === null) first = slot;
        last = slot;
      }
    }
    return first === null ? null : [first, last];
  }

  /** How to fetch a page's missing rows (exported for the tests). */
  plan(page: number): Plan | null {
    const gap = this.missing(page);
    if (gap === null) return null;
    const [first, last] = gap;
    const size = last - first + 1;
    const [low, high] = this.bounds();
    const above = this.cells.get(first - 1);
    if (above) {
      return { request: { order: "newest", cursor: this.cursorOf(above), limit: size }, place: first, step: 1,
        approximate: above.approximate };
    }
    const below = this.cells.get(last + 1);
    if (below) {
      return { request: { order: "oldest", cursor: this.cursorOf(below), limit: size }, place: last, step: -1,
        approximate: below.approximate };
    }
    if (first === low) return { request: { order: "newest", limit: size }, place: first, step: 1, approximate: false };
    if (last === high && this.base !== null) {
      return { request: { order: "oldest", limit: size }, place: last, step: -1, approximate: false };
    }
    let nearestAbove: number | null = null;
    let nearestBelow: number | null = null;
    for (const slot of this.cells.keys()) {
      if (slot < first && (nearestAbove === null || slot > nearestAbove)) nearestAbove = slot;
      if (slot > last && (nearestBelow === null || slot < nearestBelow)) nearestBelow = slot;
    }
    if (nearestAbove !== null && last - nearestAbove <= MAX_LIMIT) {
      const anchor = this.cells.get(nearestAbove)!;
      return { request: { order: "newest", cursor: this.cursorOf(anchor), limit: last - nearestAbove }, place: nearestAbove + 1,
        step: 1, approximate: anchor.approximate };
    }
    if (nearestBelow !== null && nearestBelow - first <= MAX_LIMIT) {
      const anchor = this.cells.get(nearestBelow)!;
      return { request: { order: "oldest", cursor: this.cursorOf(anchor), limit: nearestBelow - first }, place: nearestBelow - 1,
        step: -1, approximate: anchor.approximate };
    }
    if (this.sortCursor) {  // slots are positions (a sorted list inserts no flows above 0)
      return { request: { order: "newest", position: first, limit: size }, place: first, step: 1, approximate: true };
    }
    // Far from anything loaded: guess the seq from the nearest known ones on both sides.
    const topSlot = nearestAbove ?? low - 1;
    const topSeq = nearestAbove !== null ? this.cells.get(nearestAbove)!.flow.seq : this.maxSeq + 1;
    const bottomSlot = nearestBelow ?? (this.base ?? last + 1);
    const bottomSeq = nearestBelow !== null ? this.cells.get(nearestBelow)!.flow.seq : 0;
    const estimate = topSeq - ((first - topSlot) * (topSeq - bottomSeq)) / (bottomSlot - topSlot);
    // the seq expected at `first`, and the cursor just above it (pages hold seq < cursor)
    const cursor = Math.max(1, Math.min(topSeq, Math.round(estimate) + 1));
    return { request: { order: "newest", cursor, limit: size }, place: first, step: 1, approximate: true };
  }

  private cursorOf(cell: Cell): number | string {
    return cell.cursor ?? cell.flow.seq;
  }

  /** Put a fetched page where its plan says (exported for the tests). */
  place(plan: Plan, page: TrafficPage): void {
    const entries = page.entries;
    entries.forEach((flow, k) => this.put(plan.place + plan.step * k, flow, plan.approximate));
    const short = entries.length < plan.request.limit;
    if (plan.step === 1) {
      const next = plan.place + entries.length;
      if (this.base === null) {
        this.end = Math.max(this.end, next);
        if (short) this.done = true;
      } else if (short && !plan.approximate) {
        this.truncateAt(next);  // fewer flows than counted (some were deleted): the list ends here
      } else if (next > this.base) {
        this.base = next;
      }
    }
  }

  private truncateAt(slot: number): void {
    if (this.base === null || slot >= this.base) return;
    for (const [key, cell] of this.cells) {
      if (key >= slot) {
        this.cells.delete(key);
        this.slotOf.delete(cell.flow.id);
      }
    }
    this.base = slot;
  }

  private put(slot: number, flow: FlowSummary, approximate: boolean): void {
    const existing = this.slotOf.get(flow.id);
    if (existing !== undefined && existing !== slot) {
      const old = this.cells.get(existing)!;
      if (old.approximate && !approximate) {
        this.realign(existing, slot - existing);
      } else if (!old.approximate && approximate) {
        return;  // an exact row is never moved by a guess
      } else {
        // (Sorted, a row moves when its key changed since it was loaded: no cause to reload.)
        if (!old.approximate && !this.sortCursor) this.inconsistent = true;
        this.cells.delete(existing);
      }
    }
    const occupant = this.cells.get(slot);
    if (occupant && occupant.flow.id !== flow.id) {
      if (!occupant.approximate && approximate) return;
      if (this.slotOf.get(occupant.flow.id) === slot) this.slotOf.delete(occupant.flow.id);
    }
    this.cells.set(slot, { flow, approximate, cursor: this.sortCursor?.(flow) });
    this.slotOf.set(flow.id, slot);
  }

  /** Move the run of approximate rows around ``slot`` by ``delta`` (exact rows stay). */
  private realign(slot: number, delta: number): void {
    let start = slot;
    let stop = slot;
    while (this.cells.get(start - 1)?.approximate) start -= 1;
    while (this.cells.get(stop + 1)?.approximate) stop += 1;
    const run: [number, Cell][] = [];
    for (let s = start; s <= stop; s += 1) {
      const cell = this.cells.get(s)!;
      run.push([s, cell]);
      this.cells.delete(s);
      if (this.slotOf.get(cell.flow.id) === s) this.slotOf.delete(cell.flow.id);
    }
    for (const [s, cell] of run) {
      const target = s + delta;
      const occupant = this.cells.get(target);
      if (occupant && !occupant.approximate) continue;
      if (occupant) this.slotOf.delete(occupant.flow.id);
      this.cells.set(target, cell);
      this.slotOf.set(cell.flow.id, target);
    }
  }

  /** Drop the pages farthest from the viewport once more than ``maxRows`` are held. */
  private evict(): void {
    if (this.cells.size <= this.maxRows) return;
    const keep = Math.floor(this.maxRows * 0.8);
    const slots = [...this.cells.keys()].sort((a, b) => Math.abs(b - this.center) - Math.abs(a - this.center));
    for (const slot of slots) {
      if (this.cells.size <= keep) break;
      const cell = this.cells.get(slot)!;
      this.cells.delete(slot);
      if (this.slotOf.get(cell.flow.id) === slot) this.slotOf.delete(cell.flow.id);
    }
  }

  // -- live changes -------------------------------------------------------------------------

  /** Flows from the event socket: updates of rows held, and flows newer than the list. */
  live(flows: FlowSummary[]): void {
    if (this.closed) return;
    if (this.queued !== null) {
      this.queued.push(...flows);
      return;
    }
    const fresh: FlowSummary[] = [];
    let touched = false;
    for (const flow of flows) {
      const slot = this.slotOf.get(flow.id);
      if (slot !== undefined) {
        const cell = this.cells.get(slot)!;
        if (flow.version >= cell.flow.version) {
          this.cells.set(slot, { ...cell, flow });
          touched = true;
        }
      } else if (flow.seq > this.maxSeq) {
        fresh.push(flow);
      }
    }
    if (fresh.length && this.sortCursor && this.unfiltered) {
      this.newFlows += new Set(fresh.map((f) => f.id)).size;
      for (const flow of fresh) this.maxSeq = Math.max(this.maxSeq, flow.seq);
      touched = true;
    } else if (fresh.length && this.sortCursor) {
      void this.refreshHead();
    } else if (fresh.length && this.unfiltered) {
      this.prepend(fresh);
      touched = true;
    } else if (fresh.length) {
      void this.refreshHead();
    }
    if (touched) this.changed();
  }

  private prepend(flows: FlowSummary[]): void {
    const unique = new Map<string, FlowSummary>();
    for (const flow of flows) unique.set(flow.id, flow);
    const sorted = [...unique.values()].filter((f) => f.seq > this.maxSeq).sort((a, b) => a.seq - b.seq);
    for (const flow of sorted) {
      this.shift += 1;
      this.put(-this.shift, flow, false);
      this.maxSeq = flow.seq;
    }
    this.evict();
  }

  /** With a filter or search: ask the API for the matching flows newer than the list (sorted:
   * how many there are). */
  refreshHead(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      try {
        do {
          this.refreshAgain = false;
          for (let round = 0; round < 5; round += 1) {
            const arrival = this.sortCursor !== null;
            const request: PageRequest = { order: "oldest", cursor: this.maxSeq, limit: MAX_LIMIT };
            if (arrival) request.arrival = true;
            const page = await this.fetchPage(request);
            if (this.closed) return;
            if (arrival) {  // sorted: counted, not shown
              this.newFlows += page.entries.length;
              for (const flow of page.entries) this.maxSeq = Math.max(this.maxSeq, flow.seq);
            } else {
              this.prepend(page.entries);
            }
            if (page.entries.length) this.changed();
            if (page.entries.length < MAX_LIMIT) break;
          }
        } while (this.refreshAgain && !this.closed);
      } catch {
        // the next event retries
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Ids deleted: rows held close up (rows not held are not known, and stay counted). */
  remove(ids: string[]): void {
    const slots = ids.map((id) => this.slotOf.get(id)).filter((s): s is number => s !== undefined).sort((a, b) => a - b);
    if (!slots.length) return;
    const cells = [...this.cells.entries()];
    this.cells.clear();
    this.slotOf.clear();
    const gone = new Set(slots);
    const newer = slots.filter((s) => s < 0);   // arrived since the load: counted by shift
    const older = slots.filter((s) => s >= 0);  // counted by base
    for (const [slot, cell] of cells) {
      if (gone.has(slot)) continue;
      // a row keeps its display index above a deleted row, and moves up one below it
      const target = slot + newer.filter((d) => d > slot).length - older.filter((d) => d < slot).length;
      this.cells.set(target, cell);
      this.slotOf.set(cell.flow.id, target);
    }
    this.shift -= newer.length;
    if (this.base !== null) this.base -= older.length;
    else this.end = Math.max(0, this.end - older.length);
    this.changed();
  }
}
