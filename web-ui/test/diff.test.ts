import { describe, expect, it } from "vitest";
import { diffLines, normalisedJson, sideRows, splitLines, unifiedRows, type DiffOp } from "../src/diff";

/** The two sides back from the ops: what every correct diff must give. */
function sides(ops: DiffOp[]): [string[], string[]] {
  const a: string[] = [];
  const b: string[] = [];
  for (const op of ops) {
    if (op.kind !== "add") a.push(op.text);
    if (op.kind !== "del") b.push(op.text);
  }
  return [a, b];
}

function edits(ops: DiffOp[]): number {
  return ops.filter((op) => op.kind !== "same").length;
}

/** The length of a longest common subsequence, by dynamic programming (the reference). */
function lcs(a: string[], b: string[]): number {
  let previous = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i += 1) {
    const current = new Array<number>(b.length + 1).fill(0);
    for (let j = 1; j <= b.length; j += 1) {
      current[j] = a[i - 1] === b[j - 1] ? previous[j - 1] + 1 : Math.max(previous[j], current[j - 1]);
    }
    previous = current;
  }
  return previous[b.length];
}

function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}

describe("diffLines", () => {
  it("finds the changed line and keeps the rest", () => {
    const result = diffLines(["a", "b", "c", "d"], ["a", "B", "c", "d", "e"]);
    expect(result.ops).toEqual([
      { kind: "same", a: 0, b: 0, text: "a" },
      { kind: "del", a: 1, text: "b" },
      { kind: "add", b: 1, text: "B" },
      { kind: "same", a: 2, b: 2, text: "c" },
      { kind: "same", a: 3, b: 3, text: "d" },
      { kind: "add", b: 4, text: "e" },
    ]);
  });
  it("handles empty sides", () => {
    expect(diffLines([], []).ops).toEqual([]);
    expect(diffLines([], ["x"]).ops).toEqual([{ kind: "add", b: 0, text: "x" }]);
    expect(diffLines(["x", "y"], []).ops).toEqual([{ kind: "del", a: 0, text: "x" }, { kind: "del", a: 1, text: "y" }]);
  });
  it("is minimal and gives both sides back, on random inputs", () => {
    const next = random(7);
    for (let round = 0; round < 300; round += 1) {
      const pick = () => Array.from({ length: Math.floor(next() * 30) }, () => "abcd"[Math.floor(next() * 4)]);
      const a = pick();
      const b = pick();
      const { ops } = diffLines(a, b);
      expect(ops).not.toBeNull();
      expect(sides(ops!)).toEqual([a, b]);
      expect(edits(ops!)).toBe(a.length + b.length - 2 * lcs(a, b));
      for (const op of ops!) {
        if (op.kind !== "add") expect(a[op.a]).toBe(op.text);
        if (op.kind !== "del") expect(b[op.b]).toBe(op.text);
      }
    }
  });
  it("says when a diff would be too large, quickly", () => {
    const a = Array.from({ length: 50_000 }, (_, i) => `line ${i}`);
    const b = Array.from({ length: 50_000 }, (_, i) => `other ${i}`);
    const started = performance.now();
    const result = diffLines(a, b);
    expect(result.ops).toBeNull();
    expect(result.tooLarge).toBe("more than 2,000 lines differ");
    expect(performance.now() - started).toBeLessThan(2000);
    const small = { maxLines: 10, maxEdits: 100, maxSteps: 1e9 };
    expect(diffLines(a.slice(0, 20), b.slice(0, 20), small).tooLarge).toBe("more than 10 lines differ in place");
    const steps = { maxLines: 1e9, maxEdits: 1e9, maxSteps: 50 };
    expect(diffLines(a.slice(0, 40), b.slice(0, 40), steps).tooLarge).toMatch(/too different/);
  });
  it("sets a long common start and end aside: a big body with one change is cheap", () => {
    const a = Array.from({ length: 300_000 }, (_, i) => `line ${i}`);
    const b = [...a];
    b[150_000] = "changed";
    const { ops } = diffLines(a, b);
    expect(ops!.filter((op) => op.kind !== "same")).toEqual([
      { kind: "del", a: 150_000, text: "line 150000" }, { kind: "add", b: 150_000, text: "changed" }]);
  });
});

describe("views", () => {
  const a = Array.from({ length: 20 }, (_, i) => `l${i}`);
  const b = [...a];
  b[10] = "new";
  b.splice(15, 0, "inserted");
  const { ops } = diffLines(a, b);
  it("unified: changes with three lines of context, the rest skipped", () => {
    const rows = unifiedRows(ops!);
    expect(rows[0]).toEqual({ kind: "skip", lines: 7 });
    expect(rows.slice(1, 6)).toEqual([
      { kind: "same", a: 8, b: 8, text: "l7" }, { kind: "same", a: 9, b: 9, text: "l8" }, { kind: "same", a: 10, b: 10, text: "l9" },
      { kind: "del", a: 11, b: null, text: "l10" }, { kind: "add", a: null, b: 11, text: "new" }]);
    expect(rows.filter((r) => r.kind === "add").map((r) => "text" in r && r.text)).toEqual(["new", "inserted"]);
    expect(rows[rows.length - 1]).toEqual({ kind: "skip", lines: 2 });
  });
  it("side by side: a deleted and an added line pair up as changed", () => {
    const rows = sideRows(ops!);
    expect(rows).toContainEqual({ kind: "changed", left: { n: 11, text: "l10" }, right: { n: 11, text: "new" } });
    expect(rows).toContainEqual({ kind: "changed", left: null, right: { n: 16, text: "inserted" } });
  });
});

describe("text", () => {
  it("splits lines of either ending, without a phantom last line", () => {
    expect(splitLines("a\r\nb\nc\n")).toEqual(["a", "b", "c"]);
    expect(splitLines("")).toEqual([]);
    expect(splitLines("a\n\n")).toEqual(["a", ""]);
  });
  it("normalises JSON: pretty, keys sorted", () => {
    expect(normalisedJson('{"b":1,"a":{"d":[3,{"z":1,"y":2}],"c":null}}')).toBe(
      '{\n  "a": {\n    "c": null,\n    "d": [\n      3,\n      {\n        "y": 2,\n        "z": 1\n      }\n    ]\n  },\n  "b": 1\n}');
    expect(normalisedJson("{cut")).toBeNull();
  });
});
