import { describe, expect, it } from "vitest";
import type { Rule } from "../src/api";
import { emptyForm, formToRule, FormError, matchSummary, ruleError, ruleKind, ruleToForm, settingsKey } from "../src/rules";
import { describePreset, formToThrottle, hostRow, hostsToPut, throttleToForm } from "../src/settingsForms";

/** The README's rules (docs of nectoproxy-plugin-rules), and one of each form's kinds. */
const RULES: Rule[] = [
  { name: "fake login", url: "https://api.example.com/v1/login", method: "POST", mock: { status: 200, body: { token: "dev-token", expires_in: 3600 } } },
  { name: "teapot", url: "/^https://api\\.example\\.com/v1/(brew|coffee)\\b/", mock: { status: 418, headers: { "Retry-After": "60" }, body: "I'm a teapot\n" } },
  { name: "maintenance", enabled: false, host: "app.example.com", mock: { status: 503, body: "Back soon\n" } },
  { name: "slow search", url: "https://api.example.com/v1/search*", mock: { body_file: "mocks/search.json", delay_ms: 800 } },
  { name: "no analytics", host: "*.analytics.example.com", block: true },
  { name: "blocked nicely", host: "ads.test", block: { status: 451, body: "no" } },
  { name: "local build", url: "https://app.example.com/static/*", map_local: { path: "dist", strip_prefix: "/static" } },
  { name: "one file", path: "/x", map_local: "x.html" },
  { name: "api v2", host: "api.example.com", path: "/v2/*", map_remote: "http://127.0.0.1:3000" },
  { name: "exact", host: "a.test", map_remote: { url: "http://b.test/only", keep_path: false } },
  { name: "pause", delay: 300 },
  { name: "pause more", delay: { ms: 300, variance_ms: 100 } },
  { name: "slow reports", throttle: { bytes_per_second: 20000, latency_ms: 200 } },
  { name: "beta", host: "api.example.com", priority: 10, modify_request: { set_headers: { "X-Beta": "1" }, remove_query: ["cache_bust"] } },
  { name: "redact", method: ["POST", "PUT"], headers: { "Content-Type": "application/json*" }, body_contains: "token",
    modify_request: { replace: [{ find: '"token": *"[^"]*"', replace: '"token": "REDACTED"', regex: true }] } },
  { name: "no cache", modify_response: { status: 299, set_headers: { "Cache-Control": "no-store" }, remove_headers: ["ETag"], replace: [{ find: "a", replace: "b" }] } },
];

describe("rules and their form", () => {
  it.each(RULES.map((rule) => [rule.name, rule]))("turns %s into a form and back unchanged", (_, rule) => {
    expect(formToRule(ruleToForm(rule))).toEqual(rule);
  });
  it("keeps the actions the form does not show, and the API's keys out", () => {
    const rule = { id: "both", name: "both", readOnly: true, url: "*", mock: { body: "x" }, delay: 100, modify_response: { status: 201 } };
    const form = ruleToForm(rule);
    expect(form.kind).toBe("mock");
    expect(Object.keys(form.others)).toEqual(["delay", "modify_response"]);
    expect(formToRule(form)).toEqual({ name: "both", url: "*", mock: { body: "x" }, delay: 100, modify_response: { status: 201 } });
    // choosing another kind replaces the shown action; a kind that was among the others is the form's now
    expect(formToRule({ ...form, kind: "delay", ms: "5" })).toEqual({ name: "both", url: "*", delay: 5, modify_response: { status: 201 } });
  });
  it("makes a rule from a new form, leaving out what is empty", () => {
    const form = { ...emptyForm("mock"), name: " hello ", url: "http://127.0.0.1:1/mocked/*", status: "201", body: "hi\n", method: "get post" };
    expect(formToRule(form)).toEqual({ name: "hello", url: "http://127.0.0.1:1/mocked/*", method: ["get", "post"], mock: { status: 201, body: "hi\n" } });
    expect(formToRule({ ...emptyForm("block"), enabled: false })).toEqual({ enabled: false, block: true });
  });
  it("sends a number it cannot read as the text typed, for the API to name", () => {
    expect(formToRule({ ...emptyForm("mock"), status: "two hundred" }).mock).toEqual({ status: "two hundred" });
    expect(formToRule({ ...emptyForm("delay"), ms: "" }).delay).toBe("");
  });
  it("refuses what it cannot turn into JSON, naming the key", () => {
    expect(() => formToRule({ ...emptyForm("mock"), bodyJson: true, body: "{nope" })).toThrow(FormError);
    expect(() => formToRule({ ...emptyForm("mock"), bodyJson: true, body: "{nope" })).toThrow(/^mock\.body: not JSON/);
    expect(() => formToRule({ ...emptyForm("mock"), headers: "Accept json" })).toThrow(/^headers: line 1 is not "name: value"/);
  });
  it("summarizes kind and matchers for the list", () => {
    expect(ruleKind(RULES[14])).toBe("modify_request");
    expect(ruleKind({ name: "nothing" })).toBeNull();
    expect(matchSummary(RULES[14])).toBe('POST,PUT  Content-Type: application/json*  body ∋ "token"');
    expect(matchSummary({ block: true })).toBe("every request");
  });
});

describe("the API's refusals", () => {
  it("points a rule's error at the key it names, without the rule's place in the file", () => {
    expect(ruleError({ message: "rules[1] (name 'x'): mock: unknown key 'stauts' (known: status)", field: "rules[1]" }))
      .toEqual({ key: "mock", message: "mock: unknown key 'stauts' (known: status)" });
    expect(ruleError({ message: "rules[1].mock.body: null is not a value here (leave the key out)", field: "rules[1].mock.body" }))
      .toEqual({ key: "mock", message: "mock.body: null is not a value here (leave the key out)" });
    expect(ruleError({ message: `rules[0] (name "it's"): url: bad pattern`, field: "rules[0]" }).key).toBe("url");
    expect(ruleError({ message: "rules[2] (name 'x'): no action (add one of: mock, block)", field: "rules[2]" }))
      .toEqual({ key: null, message: "no action (add one of: mock, block)" });
    expect(ruleError({ message: "rule 'x' is defined in nectoproxy.toml", field: null }).key).toBeNull();
  });
  it("finds the settings key and the pass-through row a field names", () => {
    expect(settingsKey({ field: "profiles.p.loss" })).toBe("profiles");
    expect(settingsKey({ field: "hosts[1]" })).toBe("hosts");
    expect(settingsKey({ field: null })).toBeNull();
    const { hosts, rowOf } = hostsToPut(["a.test", "", " b c ", ""]);
    expect(hosts).toEqual(["a.test", "b c"]);
    expect(hostRow("hosts[1]", rowOf)).toBe(2);
    expect(hostRow("hosts", rowOf)).toBeNull();
  });
});

describe("the network profile's form", () => {
  it("turns the settings into a form and back, read-only keys left out", () => {
    const value = {
      profile: "Regular 4G", loss_mode: "503", seed: 42, hosts: { localhost: "none", "*.cdn.test": "slow-3g" },
      profiles: { "flaky-api": { download_bps: 65536, latency_ms: 300, loss: 0.1, loss_mode: "reset" } },
      source: "configuration", presets: [{ name: "Slow 3G" }], file: "/h/throttle.toml",
    };
    const form = throttleToForm(value);
    expect(form.hosts.map((h) => h.host)).toEqual(["localhost", "*.cdn.test"]);
    const { source: _s, presets: _p, file: _f, ...editable } = value;
    expect(formToThrottle(form)).toEqual(editable);
    expect(formToThrottle(throttleToForm({}))).toEqual({});
    expect(formToThrottle({ ...form, seed: "x" }).seed).toBe("x");
  });
  it("describes a preset", () => {
    expect(describePreset({ name: "Slow 3G", download_bps: 99328, upload_bps: 41984, latency_ms: 400, jitter_ms: 100 }))
      .toBe("97 KiB/s down, 41 KiB/s up, 400±100 ms");
    expect(describePreset({ name: "Offline", offline: true })).toBe("offline: every request fails");
  });
});
