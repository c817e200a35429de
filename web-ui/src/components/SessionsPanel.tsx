// Sessions: each with its flow count and size; view one, make it the active one (where new
// flows go), rename, delete, create.
import { useState } from "react";
import { api, type Session } from "../api";
import { formatDateTime, formatSize } from "../format";

export interface SessionsProps {
  sessions: Session[];
  viewed: number | null;
  onView: (id: number) => void;
  onNotify: (message: string) => void;
  onChanged: () => void;
}

export function SessionsPanel({ sessions, viewed, onView, onNotify, onChanged }: SessionsProps) {
  const [name, setName] = useState("");
  const [renaming, setRenaming] = useState<{ id: number; name: string } | null>(null);
  const run = async (what: string, action: () => Promise<unknown>) => {
    try {
      await action();
      onChanged();
    } catch (err) {
      onNotify(`${what} failed: ${err instanceof Error ? err.message : err}`);
    }
  };
  return (
    <aside className="sessions" aria-label="Sessions" data-testid="sessions">
      <h2>Sessions</h2>
      <form className="session-new" onSubmit={(event) => {
        event.preventDefault();
        if (!name.trim()) return;
        void run("Creating the session", async () => {
          const session = await api.createSession(name.trim(), true);
          setName("");
          onView(session.id);
        });
      }}>
        <input aria-label="New session name" placeholder="New session name" value={name} onChange={(e) => setName(e.target.value)} />
        <button type="submit" disabled={!name.trim()}>Create</button>
      </form>
      <ul>
        {sessions.map((session) => (
          <li key={session.id} className={`${session.id === viewed ? "viewed" : ""}`} data-session={session.id}>
            {renaming?.id === session.id ? (
              <form onSubmit={(event) => {
                event.preventDefault();
                const next = renaming.name.trim();
                setRenaming(null);
                if (next && next !== session.name) void run("Renaming", () => api.renameSession(session.id, next));
              }}>
                <input aria-label="Session name" autoFocus value={renaming.name}
                  onChange={(e) => setRenaming({ id: session.id, name: e.target.value })}
                  onKeyDown={(e) => { if (e.key === "Escape") { e.stopPropagation(); setRenaming(null); } }} />
              </form>
            ) : (
              <button className="session-name" onClick={() => onView(session.id)} title="Show its flows">
                {session.name}
              </button>
            )}
            <div className="session-meta">
              {session.active && <span className="badge">active</span>}
              <span>{session.flowCount.toLocaleString()} flow{session.flowCount === 1 ? "" : "s"}</span>
              <span>{formatSize(session.storedBytes)}</span>
              <span className="muted">{formatDateTime(session.createdAt)}</span>
            </div>
            <div className="session-actions">
              {!session.active && (
                <button onClick={() => void run("Activating", () => api.activateSession(session.id))} title="New flows go to this session">Activate</button>
              )}
              <button onClick={() => setRenaming({ id: session.id, name: session.name })}>Rename</button>
              <button className="danger" onClick={() => {
                if (window.confirm(`Delete the session "${session.name}" and its ${session.flowCount} flows?`)) {
                  void run("Deleting", () => api.deleteSession(session.id));
                }
              }}>Delete</button>
            </div>
          </li>
        ))}
      </ul>
    </aside>
  );
}
