import { describe, expect, it } from "vitest";
import { diffHeaders, formFields, header, parseHeadersText, queryParams, pastedHeaderRows, requestCookies, responseCookies, rowsToHeaders } from "../src/headers";
import type { Headers } from "../src/api";

describe("heads", () => {
  it("finds headers in any case", () => {
    const headers: Headers = [["Content-Type", "text/html"], ["X-A", "1"], ["x-a", "2"]];
    expect(header(headers, "content-type")).toBe("text/html");
    expect(header(headers, "missing")).toBeNull();
    expect(header(null, "x")).toBeNull();
  });
  it("parses the query, keeping order and repeats", () => {
    expect(queryParams("https://h/p?a=1&b=x%20y&a=2&c&d=e+f#frag")).toEqual([["a", "1"], ["b", "x y"], ["a", "2"], ["c", ""], ["d", "e f"]]);
    expect(queryParams("https://h/p")).toEqual([]);
    expect(queryParams("https://h/p?bad=%E0%A4%A")).toEqual([["bad", "%E0%A4%A"]]);
    expect(formFields("user=a%40b&pw=x")).toEqual([["user", "a@b"], ["pw", "x"]]);
  });
  it("parses cookies of requests and responses", () => {
    expect(requestCookies([["Cookie", "a=1; b=two=2"], ["cookie", "c=3"]])).toEqual([["a", "1"], ["b", "two=2"], ["c", "3"]]);
    expect(responseCookies([["Set-Cookie", "sid=abc; Path=/; HttpOnly; Max-Age=60"]])).toEqual([
      { name: "sid", value: "abc", attributes: [["Path", "/"], ["HttpOnly", ""], ["Max-Age", "60"]] },
    ]);
  });
  it("diffs a head as sent against as received", () => {
    const received: Headers = [["Host", "h"], ["Accept", "*/*"], ["X-Drop", "1"], ["X-Keep", "a"]];
    const sent: Headers = [["Host", "h"], ["Accept", "text/html"], ["X-Keep", "a"], ["X-New", "n"]];
    expect(diffHeaders(received, sent)).toEqual({
      sent: [["Host", "h", "same"], ["Accept", "text/html", "changed"], ["X-Keep", "a", "same"], ["X-New", "n", "added"]],
      removed: [["X-Drop", "1"]],
    });
  });
  it("reads header lines typed in the breakpoint editor", () => {
    expect(parseHeadersText("Host: h\n\nX-A:  b:c \r\n")).toEqual([["Host", "h"], ["X-A", "b:c"]]);
    expect(() => parseHeadersText("Host h")).toThrow(/line 1/);
  });
  it("reads the editor's header rows", () => {
    expect(rowsToHeaders([{ name: " Host ", value: "h" }, { name: "", value: " " }, { name: "X-A", value: " b:c" }]))
      .toEqual([["Host", "h"], ["X-A", "b:c"]]);
    expect(() => rowsToHeaders([{ name: "", value: "x" }])).toThrow(/header 1 has a value but no name/);
    expect(() => rowsToHeaders([{ name: "A", value: "" }, { name: "Bad Name", value: "x" }])).toThrow(/header 2: "Bad Name"/);
  });
  it("turns pasted header lines into rows", () => {
    expect(pastedHeaderRows("Host: h\r\n\nX-A:  b:c \n")).toEqual([{ name: "Host", value: "h" }, { name: "X-A", value: "b:c" }]);
    expect(pastedHeaderRows("Accept: */*")).toEqual([{ name: "Accept", value: "*/*" }]);
    expect(pastedHeaderRows("just a value")).toBeNull();
    expect(pastedHeaderRows("Host: h\nnot a header")).toBeNull();
  });
});
