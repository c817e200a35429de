// The toolbar's capture buttons: pause or resume capture (every worker of the proxy; flows are
// still proxied, just not stored) and clear the viewed session's flows, after a confirmation.
import { useState } from "react";
import { api } from "../api";
import { Modal } from "./Modals";

export interface CaptureControlsProps {
  paused: boolean | null;
  sessionId: number | null;
  sessionName: string;
  onPaused: (paused: boolean) => void;
  onCleared: () => void;
  onNotify: (message: string) => void;
}

export function CaptureControls({ paused, sessionId, sessionName, onPaused, onCleared, onNotify }: CaptureControlsProps) {
  const [confirming, setConfirming] = useState(false);
  const toggle = async () => {
    try {
      onPaused((await api.setCapture(!paused)).paused);
    } catch (err) {
      onNotify(`Could not ${paused ? "resume" : "pause"} capture: ${err instanceof Error ? err.message : err}`);
    }
  };
  const clear = async () => {
    setConfirming(false);
    if (sessionId === null) return;
    try {
      const { deleted } = await api.clearSession(sessionId);
      onNotify(`Cleared ${deleted.toLocaleString()} flow${deleted === 1 ? "" : "s"}`);
      onCleared();
    } catch (err) {
      onNotify(`Could not clear: ${err instanceof Error ? err.message : err}`);
    }
  };
  return (
    <>
      <button className={paused ? "active" : ""} aria-pressed={!!paused} disabled={paused === null} onClick={() => void toggle()}
        title={paused ? "Capture is paused: flows are proxied but not stored. Resume storing them" : "Pause capture (flows are still proxied)"}>
        {paused ? "▶ Resume" : "Pause"}
      </button>
      <button className="danger" disabled={sessionId === null} onClick={() => setConfirming(true)} title="Delete every flow of this session">
        Clear
      </button>
      {confirming && (
        <Modal title="Clear the session?" onClose={() => setConfirming(false)}>
          <p>Delete every flow of “{sessionName}”? This cannot be undone.</p>
          <div className="edit-buttons">
            <button onClick={() => setConfirming(false)}>Cancel</button>
            <button className="primary" onClick={() => void clear()} autoFocus>Clear</button>
          </div>
        </Modal>
      )}
    </>
  );
}
