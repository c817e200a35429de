import { describe, expect, it } from "vitest";
import { bodyKind, hexDump, looksLikeText, prettyJson, trimUtf8 } from "../src/bodyKind";
import { phases } from "../src/components/Waterfall";
import { RateMeter } from "../src/rate";

const utf8 = (text: string) => new TextEncoder().encode(text);

describe("body viewers", () => {
  it("chooses a viewer by type and content", () => {
    expect(bodyKind("application/json", utf8('{"a": 1}'))).toBe("json");
    expect(bodyKind(null, utf8("[1, 2]"))).toBe("json");
    expect(bodyKind("text/html", utf8("<p>hi</p>"))).toBe("text");
    expect(bodyKind("image/png", new Uint8Array([137, 80, 78, 71]))).toBe("image");
    expect(bodyKind("image/svg+xml", utf8("<svg/>"))).toBe("text");
    expect(bodyKind("application/octet-stream", new Uint8Array([0, 1, 2, 255]))).toBe("binary");
    expect(bodyKind("text/plain", new Uint8Array())).toBe("empty");
  });
  it("tells text from binary, allowing a cut UTF-8 sequence at the end", () => {
    const text = utf8("héllo wörld");
    expect(looksLikeText(text)).toBe(true);
    expect(looksLikeText(new Uint8Array([0xff, 0xfe, 0x41]))).toBe(false);
    const euro = utf8("a€");  // 61 e2 82 ac
    expect(trimUtf8(euro.subarray(0, 3))).toEqual(utf8("a"));
    expect(trimUtf8(euro)).toEqual(euro);
  });
  it("dumps hex with offsets and printable characters", () => {
    expect(hexDump(utf8("AB\n"))).toBe(`00000000  41 42 0a${" ".repeat(39)}  AB.`);
    expect(hexDump(new Uint8Array(40)).split("\n").map((l) => l.slice(0, 8))).toEqual(["00000000", "00000010", "00000020"]);
  });
  it("pretty-prints JSON or says it cannot", () => {
    expect(prettyJson('{"a":[1,2]}')?.pretty).toBe('{\n  "a": [\n    1,\n    2\n  ]\n}');
    expect(prettyJson('{"a":')).toBeNull();
  });
});

describe("timings and rates", () => {
  it("turns timing offsets into phases", () => {
    expect(phases({ connect: 2, tlsHandshake: 10, requestSent: 11, firstByte: 40, complete: 45 }, 45)).toEqual([
      { name: "connect", start: 0, end: 2 }, { name: "TLS", start: 2, end: 10 }, { name: "send", start: 10, end: 11 },
      { name: "wait", start: 11, end: 40 }, { name: "receive", start: 40, end: 45 },
    ]);
    expect(phases({ requestSent: 1, firstByte: 3 }, 4).map((p) => p.name)).toEqual(["send", "wait", "receive"]);
  });
  it("counts flows a second over a sliding window", () => {
    const meter = new RateMeter(5000);
    meter.add(1000, 0);
    meter.add(1000, 1000);
    expect(meter.rate(1000)).toBe(400);
    expect(meter.rate(5500)).toBe(200);
    expect(meter.rate(7000)).toBe(0);
  });
});
