import { describe, expect, it } from "vitest";
import type { FlowSummary, PageRequest, TrafficPage } from "../src/api";
import { PAGE, RowCache } from "../src/rowCache";

function flow(seq: number, status: number | null): FlowSummary {
  return {
    id: `f${seq}`, sessionId: 1, seq, version: 1, kind: "http", method: "GET", url: `http://h/${seq}`,
    host: "h", path: `/${seq}`, scheme: "http", httpVersion: "HTTP/1.1", status, reason: "OK",
    contentType: null, requestSize: 0, responseSize: 0, startedAt: seq, duration: 1, error: null,
    mark: null, tags: [], comment: "", websocket: false,
  };
}

const key = (f: FlowSummary): [number, number] => [f.status ?? -1, f.seq];
const before = (a: [number, number], b: [number, number]) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
const cursorOf = (f: FlowSummary) => JSON.stringify([f.status, f.seq]);

/** The API sorted by status (NULL lowest, ties by seq), with `[key, seq]` cursors; `arrival`
 * requests page by seq as unsorted ones do. */
class SortedServer {
  requests: PageRequest[] = [];
  constructor(public flows: FlowSummary[]) {}
  fetch = async (request: PageRequest): Promise<TrafficPage> => {
    this.requests.push(request);
    await Promise.resolve();
    const descending = request.order === "newest";
    let list: FlowSummary[];
    if (request.position !== undefined) {
      list = [...this.flows].sort((a, b) => (before(key(a), key(b)) ? -1 : 1));
      if (descending) list.reverse();
      list = list.slice(request.position);
    } else if (request.arrival) {
      list = [...this.flows].sort((a, b) => (descending ? b.seq - a.seq : a.seq - b.seq));
      if (request.cursor !== undefined) list = list.filter((f) => (descending ? f.seq < Number(request.cursor) : f.seq > Number(request.cursor)));
    } else {
      list = [...this.flows].sort((a, b) => (before(key(a), key(b)) ? -1 : 1));
      if (descending) list.reverse();
      if (request.cursor !== undefined) {
        const [value, seq] = JSON.parse(String(request.cursor)) as [number | null, number];
        const at: [number, number] = [value ?? -1, seq];
        list = list.filter((f) => (descending ? before(key(f), at) : before(at, key(f))));
      }
    }
    const entries = list.slice(0, request.limit);
    return { entries, next: null };
  };
  /** The list as the cache holds it: slot 0 is the largest. */
  expected(): FlowSummary[] {
    return [...this.flows].sort((a, b) => (before(key(a), key(b)) ? 1 : -1));
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 50; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}

function statuses(count: number): FlowSummary[] {
  const codes = [200, 200, 200, 404, 500, null, 204];
  return Array.from({ length: count }, (_, i) => flow(i + 1, codes[(i * 5) % codes.length]));
}

describe("RowCache sorted by a column", () => {
  it("pages with [key, seq] cursors and jumps far by position", async () => {
    const server = new SortedServer(statuses(12_000));
    const cache = new RowCache(server.fetch, 12_000, true, 20_000, cursorOf);
    await cache.start();
    expect(cache.maxSeq).toBe(12_000);
    cache.ensure(6000, 6000 + PAGE);  // the middle: one request by position
    await settle();
    expect(server.requests.filter((r) => r.position !== undefined)).toHaveLength(2);
    cache.ensure(6000 + 2 * PAGE, 6000 + 3 * PAGE);  // then on from there by cursor
    await settle();
    expect(server.requests.filter((r) => r.position !== undefined)).toHaveLength(2);
    const expected = server.expected();
    let loaded = 0;
    for (let i = 0; i < cache.count(); i += 1) {
      const row = cache.rowAt(i);
      if (row) {
        expect(row.id, `row ${i}`).toBe(expected[i].id);
        loaded += 1;
      }
    }
    for (let i = 6000; i <= 6000 + 3 * PAGE; i += 1) expect(cache.rowAt(i)?.id).toBe(expected[i].id);
    expect(loaded).toBe(6 * PAGE);  // the two ends, two pages by position, two by cursor
    expect(cache.inconsistent).toBe(false);
    const sorted = server.requests.filter((r) => !r.arrival);
    expect(sorted.every((r) => r.cursor === undefined || typeof r.cursor === "string")).toBe(true);
  });

  it("counts new flows instead of moving the rows, and updates rows it holds", async () => {
    const server = new SortedServer(statuses(50));
    const cache = new RowCache(server.fetch, 50, true, 20_000, cursorOf);
    await cache.start();
    const before = Array.from({ length: 50 }, (_, i) => cache.rowAt(i)?.id);
    cache.live([flow(51, 500), flow(52, null), flow(51, 500)]);
    const updated = { ...cache.rowAt(3)!, version: 2, comment: "seen" };
    cache.live([updated]);
    expect(cache.newFlows).toBe(2);
    expect(cache.count()).toBe(50);
    expect(Array.from({ length: 50 }, (_, i) => cache.rowAt(i)?.id)).toEqual(before);
    expect(cache.rowAt(3)?.comment).toBe("seen");
  });

  it("asks the API how many new flows match when filtered", async () => {
    const server = new SortedServer(statuses(10));
    const cache = new RowCache(server.fetch, 10, false, 20_000, cursorOf);
    await cache.start();
    server.flows.push(flow(11, 200), flow(12, 404));
    cache.live([flow(11, 200)]);
    await settle();
    expect(server.requests.at(-1)).toEqual({ order: "oldest", cursor: 10, limit: 1000, arrival: true });
    expect(cache.newFlows).toBe(2);
    expect(cache.count()).toBe(10);
  });

  it("pages on from where a row was sorted, not from a key it got later", async () => {
    const server = new SortedServer(statuses(1000));
    const cache = new RowCache(server.fetch, 1000, true, 20_000, cursorOf);
    await cache.start();
    const edge = cache.rowAt(PAGE - 1)!;  // the first page's last row
    const completed = { ...edge, status: edge.status === null ? 200 : null, version: 2 };
    cache.live([completed]);
    expect(cache.rowAt(PAGE - 1)?.status).toBe(completed.status);
    cache.ensure(PAGE, 2 * PAGE - 1);
    await settle();
    const next = server.requests.find((r) => r.cursor !== undefined && !r.arrival);
    expect(next?.cursor).toBe(cursorOf(edge));
    const expected = server.expected();
    for (let i = PAGE; i < 2 * PAGE; i += 1) expect(cache.rowAt(i)?.id).toBe(expected[i].id);
  });
});
