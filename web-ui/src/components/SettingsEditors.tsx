// The editors of two settings groups: the throttle plugin's network profile and the
// pass-through hosts. Each PUTs its whole value; a refusal (400) is shown beside the form and
// the field it names (`profile`, `profiles.p.loss`, `hosts[1]`) is marked.
import { useState } from "react";
import { api, ApiError, type SettingsGroup } from "../api";
import { settingsKey } from "../rules";
import {
  describePreset, emptyProfile, formToThrottle, hostRow, hostsToPut, PROFILE_FIELDS, throttleToForm,
  type Preset, type ThrottleForm,
} from "../settingsForms";

interface Refusal { message: string; field: string | null }

function refusal(err: unknown): Refusal {
  return err instanceof ApiError ? { message: err.message, field: err.field } : { message: String(err), field: null };
}

function Description({ group }: { group: SettingsGroup }) {
  return <p className="muted small">{group.description}</p>;
}

export function ThrottleEditor({ group, onSaved }: { group: SettingsGroup; onSaved: () => Promise<void> }) {
  const [form, setForm] = useState<ThrottleForm>(() => throttleToForm(group.value));
  const [error, setError] = useState<Refusal | null>(null);
  const [saved, setSaved] = useState(false);
  const presets = Array.isArray(group.value.presets) ? (group.value.presets as Preset[]) : [];
  const key = error ? settingsKey(error) : null;
  const set = (change: Partial<ThrottleForm>) => { setForm((f) => ({ ...f, ...change })); setSaved(false); };
  const names = ["none", ...presets.map((p) => p.name), ...form.profiles.map((p) => p.name).filter(Boolean)];
  const marked = (name: string) => (key === name ? " invalid" : "");
  return (
    <form className="settings-form" aria-label="Network profile" data-testid="throttle-editor" onSubmit={async (e) => {
      e.preventDefault();
      setError(null);
      try {
        await api.putSettings("throttle", formToThrottle(form));
        setSaved(true);
        await onSaved();
      } catch (err) {
        setError(refusal(err));
      }
    }}>
      <h3>{group.title}</h3>
      <Description group={group} />
      <p className="muted small">In force: {group.value.source === "inspector" ? `set here (${String(group.value.file)})` : "from nectoproxy.toml"}.</p>
      {typeof group.value.error === "string" && <div className="error-text">The file has an error: {group.value.error}</div>}
      {error && <div className="error-text" role="alert" data-testid="settings-error">{error.message}</div>}
      <datalist id="profile-names">{names.map((name) => <option key={name} value={name} />)}</datalist>
      <div className="rule-grid">
        <label className={`rule-field${marked("profile")}`}><span>Default profile</span>
          <input aria-label="Default profile" list="profile-names" value={form.profile} placeholder="none"
            onChange={(e) => set({ profile: e.target.value })} /></label>
        <label className={`rule-field${marked("loss_mode")}`}><span>Lost requests</span>
          <select aria-label="Lost requests" value={form.lossMode} onChange={(e) => set({ lossMode: e.target.value })}>
            <option value="">default (reset)</option><option value="reset">reset the connection</option><option value="503">answer 503</option>
          </select></label>
        <label className={`rule-field${marked("seed")}`}><span>Seed<span className="hint"> (repeatable draws)</span></span>
          <input aria-label="Seed" value={form.seed} onChange={(e) => set({ seed: e.target.value })} /></label>
      </div>
      <fieldset className={marked("hosts")}><legend>Per host (the first match wins)</legend>
        {form.hosts.map((row, n) => (
          <div className="replace-row" key={n}>
            <input aria-label={`Host pattern ${n + 1}`} value={row.host} placeholder="*.cdn.test"
              onChange={(e) => set({ hosts: form.hosts.map((h, i) => (i === n ? { ...h, host: e.target.value } : h)) })} />
            <input aria-label={`Host profile ${n + 1}`} list="profile-names" value={row.profile} placeholder="Slow 3G"
              onChange={(e) => set({ hosts: form.hosts.map((h, i) => (i === n ? { ...h, profile: e.target.value } : h)) })} />
            <button type="button" className="ghost" aria-label={`Remove host ${n + 1}`}
              onClick={() => set({ hosts: form.hosts.filter((_, i) => i !== n) })}>✕</button>
          </div>
        ))}
        <button type="button" onClick={() => set({ hosts: [...form.hosts, { host: "", profile: "" }] })}>Add a host</button>
      </fieldset>
      <fieldset className={marked("profiles")}><legend>Custom profiles</legend>
        {form.profiles.length > 0 && (
          <table className="profiles"><thead><tr><th>name</th>{PROFILE_FIELDS.map((f) => <th key={f}>{f}</th>)}<th>loss_mode</th><th /></tr></thead>
            <tbody>{form.profiles.map((profile, n) => {
              const change = (field: string, value: string) => set({ profiles: form.profiles.map((p, i) => (i === n ? { ...p, [field]: value } : p)) });
              return (
                <tr key={n}>
                  <td><input aria-label={`Profile name ${n + 1}`} value={profile.name} onChange={(e) => change("name", e.target.value)} /></td>
                  {PROFILE_FIELDS.map((field) => (
                    <td key={field}><input aria-label={`${field} ${n + 1}`} value={profile[field]} size={7}
                      className={error?.field === `profiles.${profile.name}.${field}` ? "invalid" : ""}
                      onChange={(e) => change(field, e.target.value)} /></td>
                  ))}
                  <td><select aria-label={`loss_mode ${n + 1}`} value={profile.loss_mode} onChange={(e) => change("loss_mode", e.target.value)}>
                    <option value="">default</option><option value="reset">reset</option><option value="503">503</option></select></td>
                  <td><button type="button" className="ghost" aria-label={`Remove profile ${n + 1}`}
                    onClick={() => set({ profiles: form.profiles.filter((_, i) => i !== n) })}>✕</button></td>
                </tr>
              );
            })}</tbody></table>
        )}
        <p className="muted small">Rates in bytes per second (0: unlimited), latency and jitter in ms, loss from 0 to 1.</p>
        <button type="button" onClick={() => set({ profiles: [...form.profiles, emptyProfile(`custom ${form.profiles.length + 1}`)] })}>Add a profile</button>
      </fieldset>
      <details><summary>Presets</summary>
        <table className="kv"><tbody>{presets.map((p) => <tr key={p.name}><th>{p.name}</th><td>{describePreset(p)}</td></tr>)}</tbody></table>
      </details>
      <div className="edit-buttons">
        {saved && <span className="muted" role="status">Saved: in force now.</span>}
        <button type="submit" className="primary">Save</button>
      </div>
    </form>
  );
}

export function PassthroughEditor({ group, onSaved }: { group: SettingsGroup; onSaved: () => Promise<void> }) {
  const initial = Array.isArray(group.value.hosts) ? (group.value.hosts as string[]) : [];
  const configured = Array.isArray(group.value.configured) ? (group.value.configured as string[]) : [];
  const [rows, setRows] = useState<string[]>(initial.length ? initial : [""]);
  const [error, setError] = useState<Refusal | null>(null);
  const [badRow, setBadRow] = useState<number | null>(null);
  const [saved, setSaved] = useState(false);
  const edit = (next: string[]) => { setRows(next); setSaved(false); };
  return (
    <form className="settings-form" aria-label="Pass-through hosts" data-testid="passthrough-editor" onSubmit={async (e) => {
      e.preventDefault();
      setError(null);
      setBadRow(null);
      const { hosts, rowOf } = hostsToPut(rows);
      try {
        const value = await api.putSettings("passthrough", { hosts });
        setRows(Array.isArray(value.hosts) && value.hosts.length ? (value.hosts as string[]) : [""]);
        setSaved(true);
        await onSaved();
      } catch (err) {
        const shown = refusal(err);
        setError(shown);
        setBadRow(hostRow(shown.field, rowOf));
      }
    }}>
      <h3>{group.title}</h3>
      <Description group={group} />
      {typeof group.value.error === "string" && <div className="error-text">The file has an error: {group.value.error}</div>}
      {error && <div className="error-text" role="alert" data-testid="settings-error">{error.message}</div>}
      <fieldset><legend>Hosts ("bank.example", "*.example.com": the name and its subdomains)</legend>
        {rows.map((host, n) => (
          <div className="replace-row" key={n}>
            <input aria-label={`Pass-through host ${n + 1}`} value={host} placeholder="bank.example" className={badRow === n ? "invalid" : ""}
              onChange={(e) => edit(rows.map((h, i) => (i === n ? e.target.value : h)))} spellCheck={false} />
            <button type="button" className="ghost" aria-label={`Remove pass-through host ${n + 1}`}
              onClick={() => edit(rows.length > 1 ? rows.filter((_, i) => i !== n) : [""])}>✕</button>
          </div>
        ))}
        <button type="button" onClick={() => edit([...rows, ""])}>Add a host</button>
      </fieldset>
      {configured.length > 0 && (
        <p className="muted">Also from nectoproxy.toml ([proxy] passthrough, read-only): {configured.join(", ")}</p>
      )}
      <div className="edit-buttons">
        {saved && <span className="muted" role="status">Saved: from the next connection on.</span>}
        <button type="submit" className="primary">Save</button>
      </div>
    </form>
  );
}
