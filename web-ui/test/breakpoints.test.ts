import { describe, expect, it } from "vitest";
import { modifications, type PausedFlow } from "../src/breakpoints";

const paused: PausedFlow = {
  id: "f1", phase: "request", breakpointId: "b1", pausedAt: 0,
  request: { method: "GET", url: "http://a.test/", headers: [["Host", "a.test"]], body: "" },
  response: null,
};

describe("what continuing a paused flow sends", () => {
  it("is nothing when nothing was edited", () => {
    expect(modifications(paused, { method: "GET", url: "http://a.test/", status: "", headers: [["Host", "a.test"]], body: "" })).toEqual({});
  });

  it("is only what changed, at the request phase", () => {
    expect(modifications(paused, { method: "POST", url: "http://a.test/", status: "", headers: [["Host", "a.test"], ["X-A", "1"]], body: "hi" }))
      .toEqual({ method: "POST", headers: [["Host", "a.test"], ["X-A", "1"]], body: "hi" });
  });

  it("has the status at the response phase, and no body for one that streams", () => {
    const response: PausedFlow = { ...paused, phase: "response", response: { status: 200, reason: "OK", headers: [], body: null } };
    expect(modifications(response, { method: "GET", url: "http://a.test/", status: "404", headers: [], body: null })).toEqual({ status: 404 });
  });
});
