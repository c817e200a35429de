import { describe, expect, it } from "vitest";
import { shownContent, type WebSocketFrame } from "../src/websocket";

const frame = (extra: Partial<WebSocketFrame>): WebSocketFrame => ({
  id: 1, trafficId: "f", kind: "message", timestamp: 0, direction: "client", type: "binary", size: 3,
  injected: false, truncated: false, ...extra,
});

describe("shownContent", () => {
  it("shows text as it is", () => {
    expect(shownContent(frame({ type: "text", content: "héllo" }))).toBe("héllo");
  });
  it("shows bytes in hex, cut at the limit", () => {
    expect(shownContent(frame({ contentBase64: btoa("\x00\x01\xff") }))).toBe("00 01 ff");
    expect(shownContent(frame({ contentBase64: btoa("abcdef") }), 2)).toBe("61 62 …");
  });
});
