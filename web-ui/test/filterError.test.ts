import { describe, expect, it } from "vitest";
import { addTerm, markError, quickFilter } from "../src/filterError";

describe("markError", () => {
  it("marks the word at the API's position", () => {
    // the API: invalid status '4x4' ... position 7
    expect(markError("status:4x4", 7)).toEqual({ before: "status:", at: "4x4", after: "", position: 7 });
    expect(markError("host:a ~zz b", 7)).toEqual({ before: "host:a ", at: "~zz", after: " b", position: 7 });
  });
  it("marks a delimiter by itself", () => {
    expect(markError("(host:a", 0)).toEqual({ before: "", at: "(", after: "host:a", position: 0 });
  });
  it("puts a blank at the end for 'expected a value'", () => {
    expect(markError("status:", 7)).toEqual({ before: "status:", at: " ", after: "", position: 7 });
    expect(markError("ab", 99)).toEqual({ before: "ab", at: " ", after: "", position: 2 });
  });
  it("is null without a position", () => {
    expect(markError("x", null)).toBeNull();
  });
  it("clamps a negative position", () => {
    expect(markError("abc def", -3)?.at).toBe("abc");
  });
});

describe("quick filters", () => {
  it("quotes values that need it", () => {
    expect(quickFilter("host", "api.example.com")).toBe("host:api.example.com");
    expect(quickFilter("host", 'a b"c')).toBe('host:"a b\\"c"');
  });
  it("and-s a term onto a filter, grouping an or", () => {
    expect(addTerm("", "status:404")).toBe("status:404");
    expect(addTerm("host:a", "status:404")).toBe("host:a status:404");
    expect(addTerm("host:a status:404", "status:404")).toBe("host:a status:404");
    expect(addTerm("host:a or host:b", "status:404")).toBe("(host:a or host:b) status:404");
  });
});
