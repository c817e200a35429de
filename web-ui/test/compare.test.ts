import { describe, expect, it } from "vitest";
import type { FlowRecord } from "../src/api";
import { compareBodies, headLines, sha256, type LoadedBody } from "../src/compare";

const utf8 = (text: string) => new TextEncoder().encode(text);
const body = (bytes: Uint8Array, contentType: string | null, complete = true): LoadedBody =>
  ({ bytes, complete, contentType, size: bytes.length });

describe("compare", () => {
  it("hashes with sha256", async () => {
    expect(await sha256(utf8("abc"))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
  it("compares JSON bodies normalised: key order is no difference, a value is", async () => {
    const same = await compareBodies(body(utf8('{"a":1,"b":[1,2]}'), "application/json"), body(utf8('{"b":[1,2],"a":1}'), "application/json"));
    expect(same.kind === "lines" && same.format).toBe("json");
    expect(same.kind === "lines" && same.result.ops?.every((op) => op.kind === "same")).toBe(true);
    const changed = await compareBodies(body(utf8('{"a":1}'), "application/json"), body(utf8('{"a":2}'), "application/json"));
    expect(changed.kind === "lines" && changed.result.ops?.filter((op) => op.kind !== "same")).toEqual([
      { kind: "del", a: 1, text: '  "a": 1' }, { kind: "add", b: 1, text: '  "a": 2' }]);
  });
  it("compares a cut prefix as text, and says it is partial", async () => {
    const result = await compareBodies(body(utf8('{"a": [1, 2'), "application/json", false), body(utf8('{"a": [1, 3'), "application/json", false));
    expect(result.kind === "lines" && [result.format, result.partial]).toEqual(["text", true]);
  });
  it("compares binary bodies by size and sha256", async () => {
    const a = new Uint8Array([0, 1, 2, 255]);
    const differ = await compareBodies(body(a, "application/octet-stream"), body(new Uint8Array([0, 1, 2]), "application/octet-stream"));
    expect(differ.kind === "binary" && [differ.identical, differ.left.size, differ.right.size]).toEqual([false, 4, 3]);
    const same = await compareBodies(body(a, "image/png"), body(a.slice(), "image/png"));
    expect(same.kind === "binary" && same.identical).toBe(true);
    expect(await compareBodies(body(new Uint8Array(0), null), body(new Uint8Array(0), null))).toEqual({ kind: "empty" });
  });
  it("writes heads as lines", () => {
    const flow = {
      method: "GET", url: "http://h/p", httpVersion: "HTTP/1.1", status: 200, reason: "OK", error: null,
      requestHeaders: [["Host", "h"]], responseHeaders: [["Content-Type", "text/plain"]],
    } as unknown as FlowRecord;
    expect(headLines(flow, "request")).toEqual(["GET http://h/p HTTP/1.1", "Host: h"]);
    expect(headLines(flow, "response")).toEqual(["HTTP/1.1 200 OK", "Content-Type: text/plain"]);
    expect(headLines({ ...flow, responseHeaders: null, error: "refused" }, "response")).toEqual(["(no response: refused)"]);
  });
});
