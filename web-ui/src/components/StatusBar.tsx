// The status bar: capture state and counts from /api/status, flows per second from the event
// socket, the live connection, and where the CA certificate is (http://necto.setup/).
import type { Status } from "../api";
import type { Theme } from "../theme";

export interface StatusBarProps {
  status: Status | null;
  connected: boolean;
  rate: number;
  shown: number;
  countKnown: boolean;
  loaded: number;
  theme: Theme;
  onTheme: (theme: Theme) => void;
}

export function StatusBar({ status, connected, rate, shown, countKnown, loaded, theme, onTheme }: StatusBarProps) {
  const proxy = typeof status?.proxy === "string" ? status.proxy : null;
  return (
    <footer className="statusbar" data-testid="statusbar">
      {proxy && <span>proxy {proxy}</span>}
      <span className={status?.capturing === false ? "warn" : ""} data-testid="capture-state">
        {status ? (status.paused ? "capture paused" : status.capturing === false ? "capture off" : "capturing") : "…"}
      </span>
      <span className={connected ? "" : "warn"} title="The event socket">{connected ? "live" : "reconnecting…"}</span>
      <span data-testid="rate">{rate.toFixed(rate < 10 ? 1 : 0)} flows/s</span>
      <span data-testid="shown">{shown.toLocaleString()}{countKnown ? "" : "+"} in the list</span>
      <span className="muted" data-testid="loaded" title="Rows held in memory">{loaded.toLocaleString()} loaded</span>
      {status && <span className="muted">{status.store.flows.toLocaleString()} stored · v{status.version}</span>}
      <span className="spacer" />
      <a href="http://necto.setup/" target="_blank" rel="noreferrer" title="Open through the proxy to download and trust its CA">
        CA certificate: necto.setup
      </a>
      <label>Theme{" "}
        <select aria-label="Theme" value={theme} onChange={(e) => onTheme(e.target.value as Theme)}>
          <option value="system">system</option>
          <option value="light">light</option>
          <option value="dark">dark</option>
        </select>
      </label>
    </footer>
  );
}
