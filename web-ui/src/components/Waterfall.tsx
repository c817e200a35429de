// A flow's timings as one bar: connect, TLS, sending, waiting, receiving (offsets in ms).
import type { Timings } from "../api";
import { formatDuration } from "../format";

export interface Phase {
  name: string;
  start: number;
  end: number;
}

/** The phases of a flow's timings, in order, skipping those it did not have. */
export function phases(timings: Timings, duration: number | null): Phase[] {
  const points: [string, number | undefined][] = [
    ["connect", timings.connect], ["TLS", timings.tlsHandshake], ["send", timings.requestSent],
    ["wait", timings.firstByte], ["receive", timings.complete ?? duration ?? undefined],
  ];
  const result: Phase[] = [];
  let at = 0;
  for (const [name, point] of points) {
    if (point === undefined || point === null || point < at) continue;
    result.push({ name, start: at, end: point });
    at = point;
  }
  return result;
}

export function Waterfall({ timings, duration }: { timings: Timings; duration: number | null }) {
  const list = phases(timings, duration);
  const total = Math.max(duration ?? 0, ...list.map((p) => p.end), 0.001);
  if (!list.length) return <div className="muted">No timings recorded.</div>;
  return (
    <div className="waterfall">
      <div className="wf-bar">
        {list.map((phase) => (
          <span key={phase.name} className={`wf-${phase.name.toLowerCase()}`}
            style={{ left: `${(phase.start / total) * 100}%`, width: `${Math.max(((phase.end - phase.start) / total) * 100, 0.5)}%` }}
            title={`${phase.name}: ${formatDuration(phase.end - phase.start)}`} />
        ))}
      </div>
      <table className="kv">
        <tbody>
          {list.map((phase) => (
            <tr key={phase.name}><th><i className={`wf-key wf-${phase.name.toLowerCase()}`} />{phase.name}</th>
              <td>{formatDuration(phase.end - phase.start)}</td><td className="muted">at {formatDuration(phase.start)}</td></tr>
          ))}
          <tr><th>total</th><td>{formatDuration(duration)}</td><td /></tr>
        </tbody>
      </table>
    </div>
  );
}
