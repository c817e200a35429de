import { describe, expect, it } from "vitest";
import { accept, suggest, vocabularyFrom, type Vocabulary } from "../src/suggest";

const vocabulary: Vocabulary = vocabularyFrom(
  { fields: [{ name: "host", description: "the host" }, { name: "header", description: "a header" }, { name: "status", description: "s" },
    { name: "is", description: "flag" }, { name: "method", description: "m" }, { name: "url", description: "u" }],
  flags: ["error", "pending"], marks: ["red"] },
  { hosts: [{ host: "api.example.test" }, { host: "cdn.example.test" }, { host: "my host" }], methods: { GET: 3, POST: 1 },
    statusClasses: { "2xx": 3, none: 1 }, contentTypes: [{ contentType: "application/json" }] },
);

describe("filter suggestions", () => {
  it("offers field names for the word being typed, prefix matches first", () => {
    const offered = suggest("status:4xx h", 12, vocabulary)!;
    expect(offered.from).toBe(11);
    expect(offered.items.map((i) => i.label)).toEqual(["host:", "header:", "method:"]);
    expect(accept("status:4xx h", offered, offered.items[0])).toEqual({ text: "status:4xx host:", caret: 16 });
    expect(suggest("status:4xx ", 11, vocabulary)).toBeNull();  // nothing typed: only when asked
    expect(suggest("", 0, vocabulary, true)!.items).toHaveLength(6);
  });

  it("offers the session's hosts after host:, quoting where needed, and ends the term", () => {
    const offered = suggest("!host:ap", 8, vocabulary)!;
    expect(offered.items.map((i) => i.label)).toEqual(["api.example.test"]);
    expect(accept("!host:ap", offered, offered.items[0])).toEqual({ text: "!host:api.example.test ", caret: 23 });
    const spaced = suggest("host:my", 7, vocabulary)!;
    expect(spaced.items[0].insert).toBe('host:"my host" ');
    const contains = suggest("host:cdn", 8, vocabulary)!;
    expect(contains.items.map((i) => i.label)).toEqual(["cdn.example.test"]);
    const middle = suggest("(host:ex or status:2xx)", 8, vocabulary)!;
    expect(accept("(host:ex or status:2xx)", middle, middle.items[0]).text).toBe("(host:api.example.test or status:2xx)");
  });

  it("offers methods, status classes, flags; nothing for free text or quotes", () => {
    expect(suggest("method:", 7, vocabulary)!.items.map((i) => i.label)).toEqual(["GET", "POST"]);
    expect(suggest("status:", 7, vocabulary)!.items.map((i) => i.label)).toEqual(["2xx"]);
    expect(suggest("is:p", 4, vocabulary)!.items.map((i) => i.label)).toEqual(["pending"]);
    expect(suggest("url:ap", 6, vocabulary)).toBeNull();
    expect(suggest('host:"ap', 8, vocabulary)).toBeNull();
    expect(suggest("host", 4, vocabulary)).toBeNull();  // typed in full: nothing more to offer
  });
});
