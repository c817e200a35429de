import { describe, expect, it } from "vitest";
import type { FlowSummary, PageRequest, TrafficPage } from "../src/api";
import { PAGE, RowCache } from "../src/rowCache";

function flow(seq: number, version = 1): FlowSummary {
  return {
    id: `f${seq}`, sessionId: 1, seq, version, kind: "http", method: "GET", url: `http://h/${seq}`,
    host: "h", path: `/${seq}`, scheme: "http", httpVersion: "HTTP/1.1", status: 200, reason: "OK",
    contentType: null, requestSize: 0, responseSize: 0, startedAt: seq, duration: 1, error: null,
    mark: null, tags: [], comment: "", websocket: false,
  };
}

/** The API's keyset paging over a list of flows (ascending seq). */
class FakeServer {
  requests: PageRequest[] = [];
  constructor(public flows: FlowSummary[]) {}
  fetch = async (request: PageRequest): Promise<TrafficPage> => {
    this.requests.push(request);
    await Promise.resolve();
    const newest = request.order === "newest";
    let list = newest ? [...this.flows].reverse() : this.flows;
    if (request.cursor !== undefined) {
      const cursor = Number(request.cursor);
      list = list.filter((f) => (newest ? f.seq < cursor : f.seq > cursor));
    }
    const entries = list.slice(0, request.limit);
    return { entries, next: list.length > request.limit ? entries[entries.length - 1].seq : null };
  };
}

async function settle(): Promise<void> {
  for (let i = 0; i < 50; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}

function range(count: number, seq = (i: number) => i + 1): FlowSummary[] {
  return Array.from({ length: count }, (_, i) => flow(seq(i)));
}

/** The cache's rows in display order must be the server's, newest first, where loaded. */
function checkRows(cache: RowCache, server: FakeServer): number {
  const newestFirst = [...server.flows].reverse();
  let loaded = 0;
  for (let i = 0; i < cache.count(); i += 1) {
    const row = cache.rowAt(i);
    if (row) {
      expect(row.id, `row ${i}`).toBe(newestFirst[i].id);
      loaded += 1;
    }
  }
  return loaded;
}

describe("RowCache", () => {
  it("opens with the newest and the oldest page of a long list", async () => {
    const server = new FakeServer(range(100_000));
    const cache = new RowCache(server.fetch, 100_000, true);
    await cache.start();
    expect(cache.count()).toBe(100_000);
    expect(cache.rowAt(0)?.seq).toBe(100_000);
    expect(cache.rowAt(99_999)?.seq).toBe(1);
    expect(cache.rowAt(PAGE)).toBeUndefined();
    expect(server.requests).toEqual([{ order: "newest", limit: PAGE }, { order: "oldest", limit: PAGE }]);
    expect(checkRows(cache, server)).toBe(2 * PAGE);
  });

  it("pages in from a neighbour's cursor as the view moves", async () => {
    const server = new FakeServer(range(5000));
    const cache = new RowCache(server.fetch, 5000, true);
    await cache.start();
    cache.ensure(PAGE + 10, PAGE + 40);
    await settle();
    expect(server.requests[2]).toEqual({ order: "newest", cursor: 5000 - PAGE + 1, limit: PAGE });
    cache.ensure(5000 - PAGE - 30, 5000 - PAGE - 1);
    await settle();
    expect(server.requests[3]).toEqual({ order: "oldest", cursor: PAGE, limit: PAGE });
    expect(checkRows(cache, server)).toBe(4 * PAGE);
  });

  it("jumps into the middle of a dense list by interpolating the cursor", async () => {
    const server = new FakeServer(range(100_000));
    const cache = new RowCache(server.fetch, 100_000, true);
    await cache.start();
    cache.ensure(50_010, 50_050);
    await settle();
    expect(server.requests.length).toBe(3);
    expect(checkRows(cache, server)).toBe(3 * PAGE);
  });

  it("moves guessed rows to where an exact load puts them", async () => {
    // seqs with an uneven spread: the interpolation guesses wrong
    const server = new FakeServer(range(20_000, (i) => (i < 10_000 ? i + 1 : 10_000 + (i - 9_999) * 5)));
    const cache = new RowCache(server.fetch, 20_000, true, 100_000);
    await cache.start();
    cache.ensure(6_000, 6_020);
    await settle();
    const guessed = cache.rowAt(6_000)!;
    expect(guessed).toBeDefined();
    // walk down from the top, page by page: exact loads meet the guessed run
    for (let at = 0; at <= 7_000; at += PAGE) {
      cache.ensure(at, at + PAGE - 1);
      await settle();
    }
    checkRows(cache, server);
    const ids = new Set<string>();
    for (let i = 0; i <= 7_000; i += 1) {
      const row = cache.rowAt(i);
      expect(row, `row ${i}`).toBeDefined();
      expect(ids.has(row!.id)).toBe(false);
      ids.add(row!.id);
    }
  });

  it("keeps at most maxRows, dropping those far from the view", async () => {
    const server = new FakeServer(range(10_000));
    const cache = new RowCache(server.fetch, 10_000, true, 1000);
    await cache.start();
    for (let at = 0; at < 3000; at += PAGE) {
      cache.ensure(at, at + PAGE - 1);
      await settle();
    }
    expect(cache.loadedRows()).toBeLessThanOrEqual(1000);
    expect(cache.rowAt(2999)).toBeDefined();
    expect(cache.rowAt(0)).toBeUndefined();
    checkRows(cache, server);
  });

  it("puts live flows on top and updates the rows it holds", async () => {
    const server = new FakeServer(range(300));
    const cache = new RowCache(server.fetch, 300, true);
    cache.live([flow(301)]);  // queued until the first page is in
    await cache.start();
    expect(cache.count()).toBe(301);
    cache.live([flow(303), flow(302), flow(5, 2)]);
    expect(cache.count()).toBe(303);
    expect(cache.rowAt(0)?.seq).toBe(303);
    expect(cache.rowAt(2)?.seq).toBe(301);
    expect(cache.rowAt(3)?.seq).toBe(300);
    expect(cache.rowAt(302)?.version).toBe(1);  // f1, untouched
    expect(cache.rowAt(298)?.version).toBe(2);  // f5
    cache.live([flow(303, 3), flow(303, 2)]);
    expect(cache.rowAt(0)?.version).toBe(3);  // an older version never replaces a newer one
    // the oldest page was loaded at slots base-1.., so indices stay right below the new rows
    server.flows.push(flow(301), flow(302), flow(303));
    checkRows(cache, server);
  });

  it("asks the API for matching flows newer than the list when filtered", async () => {
    const server = new FakeServer(range(10));
    const cache = new RowCache(server.fetch, 10, false);
    await cache.start();
    server.flows.push(flow(11), flow(12));
    cache.live([flow(12)]);
    await settle();
    expect(server.requests.at(-1)).toEqual({ order: "oldest", cursor: 10, limit: 1000 });
    cache.live([flow(12, 2)]);  // an update of a row held: no request
    await settle();
    expect(server.requests.length).toBe(2);
    expect(cache.count()).toBe(12);
    checkRows(cache, server);
  });

  it("closes up deleted rows", async () => {
    const server = new FakeServer(range(50));
    const cache = new RowCache(server.fetch, 50, true);
    await cache.start();
    cache.live([flow(51)]);
    cache.remove(["f51", "f40", "f10", "unknown"]);
    server.flows = server.flows.filter((f) => ![40, 10].includes(f.seq));
    expect(cache.count()).toBe(48);
    expect(checkRows(cache, server)).toBe(48);
  });

  it("grows a search's list until a short page ends it", async () => {
    const server = new FakeServer(range(450));
    const cache = new RowCache(server.fetch, null, false);
    await cache.start();
    expect(cache.countKnown()).toBe(false);
    expect(cache.count()).toBe(2 * PAGE);
    cache.ensure(PAGE, 2 * PAGE - 1);
    await settle();
    cache.ensure(2 * PAGE, 3 * PAGE - 1);
    await settle();
    expect(cache.countKnown()).toBe(true);
    expect(cache.count()).toBe(450);
    expect(checkRows(cache, server)).toBe(450);
  });

  it("ends the list where the API has fewer flows than counted", async () => {
    const server = new FakeServer(range(150));
    const cache = new RowCache(server.fetch, 160, true);
    await cache.start();
    expect(cache.count()).toBe(150);
    expect(cache.inconsistent).toBe(false);
  });

  it("says so when two exact loads disagree (flows deleted behind the count)", async () => {
    const server = new FakeServer(range(990));
    const cache = new RowCache(server.fetch, 1000, true);
    await cache.start();
    for (let at = PAGE; at < 1000; at += PAGE) {
      cache.ensure(at, at + PAGE - 1);
      await settle();
    }
    expect(cache.inconsistent).toBe(true);
  });
});
