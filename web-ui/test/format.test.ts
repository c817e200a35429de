import { describe, expect, it } from "vitest";
import { formatDuration, formatSize, mediaType, protocolName, statusClass, versionName } from "../src/format";

describe("formatSize", () => {
  it("uses binary units and trims zeros", () => {
    expect(formatSize(0)).toBe("0 B");
    expect(formatSize(1023)).toBe("1023 B");
    expect(formatSize(1024)).toBe("1 KiB");
    expect(formatSize(1536)).toBe("1.5 KiB");
    expect(formatSize(10 * 1024 * 1024)).toBe("10 MiB");
    expect(formatSize(123.4 * 1024 * 1024)).toBe("123 MiB");
    expect(formatSize(2 ** 50)).toBe("1024 TiB");
  });
  it("is empty when not known", () => {
    expect(formatSize(null)).toBe("");
    expect(formatSize(undefined)).toBe("");
    expect(formatSize(-1)).toBe("");
  });
});

describe("formatDuration", () => {
  it("scales from sub-millisecond to minutes", () => {
    expect(formatDuration(0.42)).toBe("0.4 ms");
    expect(formatDuration(0)).toBe("0 ms");
    expect(formatDuration(41.23)).toBe("41 ms");
    expect(formatDuration(1520)).toBe("1.52 s");
    expect(formatDuration(12500)).toBe("12.5 s");
    expect(formatDuration(125000)).toBe("2 min 5 s");
    expect(formatDuration(120000)).toBe("2 min");
    expect(formatDuration(null)).toBe("");
  });
});

describe("statusClass and mediaType", () => {
  it("classes statuses, errors and pending flows", () => {
    expect(statusClass(204, null)).toBe("2xx");
    expect(statusClass(404, null)).toBe("4xx");
    expect(statusClass(503, "x")).toBe("5xx");
    expect(statusClass(null, "connection refused")).toBe("error");
    expect(statusClass(null, null)).toBe("pending");
  });
  it("drops parameters", () => {
    expect(mediaType("Application/JSON; charset=utf-8")).toBe("application/json");
    expect(mediaType(null)).toBe("");
  });
});

describe("round numbers", () => {
  it("keeps the zeros of integers", () => {
    expect(formatSize(100 * 1024)).toBe("100 KiB");
    expect(formatDuration(10000)).toBe("10 s");
    expect(formatDuration(1000)).toBe("1 s");
  });
});

describe("protocol names", () => {
  it("names HTTP/2 and HTTP/3 without a minor version, as ALPN does in the list", () => {
    expect(protocolName("HTTP/2.0")).toBe("h2");
    expect(protocolName("HTTP/2")).toBe("h2");
    expect(protocolName("HTTP/3")).toBe("h3");
    expect(protocolName("HTTP/1.1")).toBe("h1.1");
    expect(protocolName("HTTP/1.0")).toBe("h1.0");
    expect(versionName("HTTP/2.0")).toBe("HTTP/2");
    expect(versionName("HTTP/3.0")).toBe("HTTP/3");
    expect(versionName("HTTP/1.1")).toBe("HTTP/1.1");
    expect(versionName("")).toBe("");
  });
});
