// The form of one rule: its name and matchers, then the fields of its kind (mock, block, ...).
// The API's refusal is shown beside the form, and the field it names is marked; "JSON" shows
// the rule as the API has it, for what the form does not cover (several actions at once).
import { useState, type ReactNode } from "react";
import { ApiError, type Rule } from "../api";
import { emptyForm, formToRule, FormError, KIND_LABELS, KINDS, ruleError, ruleToForm, type Kind, type RuleForm } from "../rules";

export interface RuleEditorProps {
  /** The rule edited; null for a new one. */
  rule: Rule | null;
  onSave: (rule: Rule) => Promise<void>;
  onClose: () => void;
}

interface Shown { key: string | null; message: string }

export function RuleEditor({ rule, onSave, onClose }: RuleEditorProps) {
  const readOnly = !!rule?.readOnly;
  const [form, setForm] = useState<RuleForm>(() => (rule ? ruleToForm(rule) : emptyForm()));
  const [json, setJson] = useState<string | null>(null);
  const [error, setError] = useState<Shown | null>(null);
  const [busy, setBusy] = useState(false);
  const set = <K extends keyof RuleForm>(key: K, value: RuleForm[K]) => setForm((f) => ({ ...f, [key]: value }));

  const toJson = () => {
    try {
      setJson(JSON.stringify(formToRule(form), null, 2));
      setError(null);
    } catch (err) {
      setError({ key: err instanceof FormError ? err.key : null, message: String(err instanceof Error ? err.message : err) });
    }
  };
  const fromJson = () => {
    try {
      setForm(ruleToForm(JSON.parse(json ?? "{}") as Rule));
      setJson(null);
      setError(null);
    } catch (err) {
      setError({ key: null, message: `not JSON: ${err instanceof Error ? err.message : err}` });
    }
  };

  const save = async () => {
    setError(null);
    let value: Rule;
    try {
      value = json !== null ? (JSON.parse(json) as Rule) : formToRule(form);
    } catch (err) {
      setError(err instanceof FormError ? { key: err.key.split(".")[0], message: err.message }
        : { key: null, message: `not JSON: ${err instanceof Error ? err.message : err}` });
      return;
    }
    setBusy(true);
    try {
      await onSave(value);
    } catch (err) {
      setError(err instanceof ApiError ? ruleError(err) : { key: null, message: String(err) });
    } finally {
      setBusy(false);
    }
  };

  /** A labelled input; ``key``: the rule's key it is, whose error it shows (null: the action's
   * fields, whose errors the action's box shows once). */
  const field = (key: string | null, label: string, input: ReactNode, hint?: string) => (
    <label className={`rule-field${key !== null && error?.key === key ? " invalid" : ""}`}>
      <span>{label}{hint && <span className="hint"> ({hint})</span>}</span>
      {input}
      {key !== null && error?.key === key && <span className="field-error">{error.message}</span>}
    </label>
  );
  const input = (key: keyof RuleForm, label: string, placeholder = "") => (
    <input aria-label={label} value={form[key] as string} placeholder={placeholder} disabled={readOnly}
      onChange={(e) => set(key, e.target.value as never)} spellCheck={false} />
  );
  const area = (key: keyof RuleForm, label: string, rows = 3, placeholder = "") => (
    <textarea aria-label={label} rows={rows} value={form[key] as string} placeholder={placeholder} disabled={readOnly}
      onChange={(e) => set(key, e.target.value as never)} spellCheck={false} />
  );
  const body = (what: string) => (
    <>
      {field(null, `${what} body`, area("body", `${what} body`, 4))}
      <label className="check"><input type="checkbox" checked={form.bodyJson} disabled={readOnly}
        onChange={(e) => set("bodyJson", e.target.checked)} /> the body is JSON (sent as application/json)</label>
    </>
  );

  const kindFields = () => {
    const kind = form.kind;
    switch (kind) {
      case "mock":
        return (<>
          {field(null, "Status", input("status", "Status", "200"))}
          {field(null, "Response headers", area("mockHeaders", "Response headers", 2, "Retry-After: 60"), "one \"Name: value\" a line")}
          {body("Response")}
          {field(null, "Body file", input("bodyFile", "Body file", "mocks/search.json"), "instead of a body; relative to the rules file")}
          {field(null, "Delay (ms)", input("delayMs", "Delay (ms)", "0"))}
        </>);
      case "block":
        return (<>
          {field(null, "Status", input("status", "Status", "403"))}
          {body("Response")}
        </>);
      case "delay":
        return (<>
          {field(null, "Delay (ms)", input("ms", "Delay (ms)", "300"))}
          {field(null, "Variance (ms)", input("varianceMs", "Variance (ms)", "0"), "± a random amount")}
        </>);
      case "throttle":
        return (<>
          {field(null, "Bytes per second", input("bytesPerSecond", "Bytes per second", "20000"))}
          {field(null, "Latency (ms)", input("latencyMs", "Latency (ms)", "0"))}
        </>);
      case "map_remote":
        return (<>
          {field(null, "Target URL", input("target", "Target URL", "http://127.0.0.1:3000"))}
          <label className="check"><input type="checkbox" checked={form.keepPath} disabled={readOnly}
            onChange={(e) => set("keepPath", e.target.checked)} /> append the request's path and query to it</label>
        </>);
      case "map_local":
        return (<>
          {field(null, "Folder or file", input("target", "Folder or file", "dist"), "relative to the rules file")}
          {field(null, "Strip prefix", input("stripPrefix", "Strip prefix", "/static"))}
          {field(null, "Index file", input("index", "Index file", "index.html"))}
          {field(null, "Response headers", area("mockHeaders", "Response headers", 2), "one \"Name: value\" a line")}
        </>);
      case "modify_request":
      case "modify_response":
        return (<>
          {kind === "modify_response" && field(null, "Status", input("status", "Status"))}
          {field(null, "Set headers", area("setHeaders", "Set headers", 2, "X-Beta: 1"), "one \"Name: value\" a line")}
          {field(null, "Remove headers", input("removeHeaders", "Remove headers", "ETag, Cache-Control"))}
          {kind === "modify_request" && field(null, "Set query", area("setQuery", "Set query", 2, "debug=1"), "one \"name=value\" a line")}
          {kind === "modify_request" && field(null, "Remove query", input("removeQuery", "Remove query", "cache_bust"))}
          {body("New")}
          <fieldset className="replace-list"><legend>Find and replace in the body</legend>
            {form.replace.map((r, n) => (
              <div className="replace-row" key={n}>
                <input aria-label={`Find ${n + 1}`} value={r.find} disabled={readOnly} placeholder="find"
                  onChange={(e) => set("replace", form.replace.map((x, i) => (i === n ? { ...x, find: e.target.value } : x)))} />
                <input aria-label={`Replace ${n + 1}`} value={r.replace} disabled={readOnly} placeholder="replace with"
                  onChange={(e) => set("replace", form.replace.map((x, i) => (i === n ? { ...x, replace: e.target.value } : x)))} />
                <label className="check"><input type="checkbox" checked={r.regex} disabled={readOnly}
                  onChange={(e) => set("replace", form.replace.map((x, i) => (i === n ? { ...x, regex: e.target.checked } : x)))} /> regex</label>
                {!readOnly && <button type="button" className="ghost" aria-label={`Remove replacement ${n + 1}`}
                  onClick={() => set("replace", form.replace.filter((_, i) => i !== n))}>✕</button>}
              </div>
            ))}
            {!readOnly && <button type="button" onClick={() => set("replace", [...form.replace, { find: "", replace: "", regex: false }])}>Add a replacement</button>}
          </fieldset>
        </>);
    }
  };

  const others = Object.keys(form.others);
  const actionError = (KINDS as readonly string[]).includes(error?.key ?? "");
  return (
    <form className="rule-editor" aria-label="Rule" data-testid="rule-editor" onSubmit={(e) => { e.preventDefault(); void save(); }}>
      <header>
        <h3>{readOnly ? `${rule?.name ?? rule?.id} (nectoproxy.toml, read-only)` : rule ? `Edit "${rule.id}"` : "New rule"}</h3>
        <div className="seg">
          <button type="button" className={json === null ? "tab active" : "tab"} onClick={() => json !== null && fromJson()}>Form</button>
          <button type="button" className={json !== null ? "tab active" : "tab"} onClick={() => json === null && toJson()}>JSON</button>
        </div>
      </header>
      {error && <div className="error-text" role="alert" data-testid="rule-error">{error.message}</div>}
      {json !== null ? (
        <textarea aria-label="Rule JSON" className="rule-json" rows={18} value={json} readOnly={readOnly}
          onChange={(e) => setJson(e.target.value)} spellCheck={false} />
      ) : (<>
        <div className="rule-grid">
          {field("name", "Name", input("name", "Name", "fake login"), "unique")}
          {field("priority", "Priority", input("priority", "Priority", "0"), "higher first")}
        </div>
        <label className="check"><input type="checkbox" checked={form.enabled} disabled={readOnly}
          onChange={(e) => set("enabled", e.target.checked)} /> enabled</label>
        <fieldset><legend>Match (every one given must hold; none: every request)</legend>
          {field("url", "URL", input("url", "URL", "https://api.example.com/v1/*"), "glob, or /regex/")}
          <div className="rule-grid">
            {field("host", "Host", input("host", "Host", "*.example.com"))}
            {field("path", "Path", input("path", "Path", "/static/*.js"))}
            {field("method", "Methods", input("method", "Methods", "GET, POST"))}
          </div>
          {field("headers", "Request headers", area("headers", "Request headers", 2, "Accept: *json*"), "one \"Name: pattern\" a line")}
          {field("body_contains", "Body contains", input("bodyContains", "Body contains"))}
        </fieldset>
        <fieldset className={actionError ? "invalid" : ""}><legend>Action</legend>
          {field(null, "Kind", (
            <select aria-label="Kind" value={form.kind} disabled={readOnly} onChange={(e) => set("kind", e.target.value as Kind)}>
              {KINDS.map((kind) => <option key={kind} value={kind}>{KIND_LABELS[kind]}</option>)}
            </select>
          ))}
          {kindFields()}
          {others.length > 0 && <p className="muted">Also: {others.join(", ")} (kept as they are; see JSON)</p>}
          {actionError && <span className="field-error">{error?.message}</span>}
        </fieldset>
      </>)}
      <div className="edit-buttons">
        <button type="button" onClick={onClose}>{readOnly ? "Close" : "Cancel"}</button>
        {!readOnly && <button type="submit" className="primary" disabled={busy}>{busy ? "Saving…" : rule ? "Save" : "Create"}</button>}
      </div>
    </form>
  );
}
