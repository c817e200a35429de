// The live configuration view: the rules plugin's rules, the throttle plugin's network profile
// and the pass-through hosts (docs/api.md, Live settings). Every change goes to the API, which
// applies it to the running proxy and saves it; the view then shows what the API answers.
// ``version`` changes when the event socket says the settings changed elsewhere.
import { useCallback, useEffect, useState } from "react";
import { api, type Rule, type RuleList, type SettingsList } from "../api";
import { KIND_LABELS, matchSummary, ruleKind } from "../rules";
import { RuleEditor } from "./RuleEditor";
import { PassthroughEditor, ThrottleEditor } from "./SettingsEditors";

type Tab = "rules" | "throttle" | "passthrough";
const TABS: [Tab, string][] = [["rules", "Rules"], ["throttle", "Network profile"], ["passthrough", "Pass-through hosts"]];

export interface RulesPanelProps {
  version: number;
  onNotify: (message: string) => void;
  onClose: () => void;
}

/** What to do when a bundled plugin offers no settings: the API's own words (`code` in
 * backquotes shown as code). */
export function NotEnabled({ hint }: { hint: string }) {
  const parts = (hint.charAt(0).toUpperCase() + hint.slice(1)).split("`");
  return (
    <div className="not-enabled" role="note" data-testid="not-enabled">
      <strong>Not enabled.</strong> {parts.map((part, n) => (n % 2 ? <code key={n}>{part}</code> : part))}.
    </div>
  );
}

export function RulesPanel({ version, onNotify, onClose }: RulesPanelProps) {
  const [tab, setTab] = useState<Tab>("rules");
  const [settings, setSettings] = useState<SettingsList | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  const reload = useCallback(async () => {
    try {
      setSettings(await api.settings());
      setFailed(null);
    } catch (err) {
      setFailed(err instanceof Error ? err.message : String(err));
    }
  }, []);
  useEffect(() => { void reload(); }, [reload, version]);

  const group = (name: Tab) => settings?.settings.find((s) => s.name === name);
  const hint = (name: Tab) => settings?.unavailable[name] ?? "this plugin offers no settings in this run";
  return (
    <section className="live-settings" aria-label="Live configuration" data-testid="rules-panel">
      <header className="live-header">
        <div className="seg" role="tablist">
          {TABS.map(([name, label]) => (
            <button key={name} role="tab" aria-selected={tab === name} className={tab === name ? "tab active" : "tab"}
              onClick={() => setTab(name)}>{label}</button>
          ))}
        </div>
        <span className="muted">Applied to the running proxy at once, and kept across restarts.</span>
        <button className="ghost" onClick={onClose} aria-label="Close the live configuration">✕</button>
      </header>
      {failed && <div className="error-text pad" role="alert">{failed}</div>}
      {settings && tab === "rules" && (group("rules") ? <RulesTab version={version} onNotify={onNotify} /> : <NotEnabled hint={hint("rules")} />)}
      {settings && tab === "throttle" && (() => {
        const found = group("throttle");
        return found ? <ThrottleEditor group={found} onSaved={reload} /> : <NotEnabled hint={hint("throttle")} />;
      })()}
      {settings && tab === "passthrough" && (() => {
        const found = group("passthrough");
        return found ? <PassthroughEditor group={found} onSaved={reload} /> : <NotEnabled hint={hint("passthrough")} />;
      })()}
    </section>
  );
}

type Editing = { rule: Rule | null } | null;

function RulesTab({ version, onNotify }: { version: number; onNotify: (message: string) => void }) {
  const [list, setList] = useState<RuleList | null>(null);
  const [editing, setEditing] = useState<Editing>(null);
  const [dragged, setDragged] = useState<string | null>(null);
  const reload = useCallback(async () => {
    try {
      setList(await api.rules());
    } catch (err) {
      onNotify(`Could not read the rules: ${err instanceof Error ? err.message : err}`);
    }
  }, [onNotify]);
  useEffect(() => { void reload(); }, [reload, version]);

  const run = async (what: string, action: () => Promise<unknown>) => {
    try {
      await action();
    } catch (err) {
      onNotify(`${what} failed: ${err instanceof Error ? err.message : err}`);
    }
    await reload();
  };
  const ids = list?.rules.map((r) => String(r.id)) ?? [];
  const move = (id: string, to: number) => {
    const from = ids.indexOf(id);
    if (from < 0 || to < 0 || to >= ids.length || from === to) return;
    const next = [...ids];
    next.splice(from, 1);
    next.splice(to, 0, id);
    void run("Reordering", () => api.reorderRules(next));
  };
  const save = async (rule: Rule) => {
    const id = editing?.rule?.id;
    if (id) await api.replaceRule(id, rule);
    else await api.createRule(rule);
    setEditing(null);
    onNotify(`Saved the rule "${rule.name ?? id ?? "new rule"}": in force now`);
    await reload();
  };

  if (!list) return <div className="pad muted">Loading the rules…</div>;
  return (
    <div className="rules-tab">
      <div className="rules-list">
        <div className="rules-actions">
          <button className="primary" onClick={() => setEditing({ rule: null })}>New rule</button>
          <span className="muted" title="The rules file">{list.file}</span>
        </div>
        {list.error && <div className="error-text" role="alert">The rules file has an error (the previous rules stay in force): {list.error}</div>}
        <p className="muted small">Higher priority first; rules of equal priority in this order. Drag a rule, or use ↑ ↓, to move it.</p>
        {list.rules.length === 0 && <p className="muted pad">No rules yet.</p>}
        <ol className="rules" data-testid="rules">
          {list.rules.map((rule, n) => {
            const id = String(rule.id);
            return (
              <li key={id} data-rule={id} className={`rule-item${rule.enabled === false ? " disabled" : ""}${dragged === id ? " dragged" : ""}${editing?.rule?.id === id ? " editing" : ""}`}
                draggable onDragStart={(e) => { setDragged(id); e.dataTransfer.effectAllowed = "move"; }}
                onDragOver={(e) => { if (dragged) e.preventDefault(); }}
                onDrop={(e) => { e.preventDefault(); if (dragged) move(dragged, n); setDragged(null); }}
                onDragEnd={() => setDragged(null)}>
                <span className="drag" aria-hidden="true">⠿</span>
                <RuleSummary rule={rule} />
                <label className="switch" title={rule.enabled === false ? "Off: switch it on" : "On: switch it off"}>
                  <input type="checkbox" role="switch" aria-label={`Enabled: ${id}`} checked={rule.enabled !== false}
                    onChange={() => void run("Switching", () => api.toggleRule(id))} />
                </label>
                <span className="rule-buttons">
                  <button className="ghost" aria-label={`Move ${id} up`} disabled={n === 0} onClick={() => move(id, n - 1)}>↑</button>
                  <button className="ghost" aria-label={`Move ${id} down`} disabled={n === list.rules.length - 1} onClick={() => move(id, n + 1)}>↓</button>
                  <button onClick={() => setEditing({ rule })}>Edit</button>
                  <button className="danger" onClick={() => {
                    if (window.confirm(`Delete the rule "${id}"?`)) void run("Deleting", () => api.deleteRule(id));
                  }}>Delete</button>
                </span>
              </li>
            );
          })}
        </ol>
        {list.configured.length > 0 && (<>
          <h3 className="small-title">From nectoproxy.toml (read-only: change them there)</h3>
          <ol className="rules" data-testid="configured-rules">
            {list.configured.map((rule) => (
              <li key={String(rule.id)} className={`rule-item read-only${rule.enabled === false ? " disabled" : ""}`} data-rule={String(rule.id)}>
                <span className="drag" aria-hidden="true" />
                <RuleSummary rule={rule} />
                <span className="read-only-tag">nectoproxy.toml</span>
                <label className="switch"><input type="checkbox" role="switch" aria-label={`Enabled: ${rule.id}`}
                  checked={rule.enabled !== false} disabled /></label>
                <span className="rule-buttons"><button onClick={() => setEditing({ rule })}>View</button></span>
              </li>
            ))}
          </ol>
        </>)}
      </div>
      {editing && (
        <RuleEditor key={String(editing.rule?.id ?? "new")} rule={editing.rule} onSave={save} onClose={() => setEditing(null)} />
      )}
    </div>
  );
}

function RuleSummary({ rule }: { rule: Rule }) {
  const kind = ruleKind(rule);
  const priority = typeof rule.priority === "number" && rule.priority !== 0 ? rule.priority : null;
  return (
    <span className="rule-summary">
      <span className="rule-name">{String(rule.id)}</span>
      <span className="rule-kind">{kind ? KIND_LABELS[kind] : "?"}</span>
      {priority !== null && <span className="rule-priority" title="priority">p{priority}</span>}
      <span className="rule-match" title={matchSummary(rule)}>{matchSummary(rule)}</span>
    </span>
  );
}
