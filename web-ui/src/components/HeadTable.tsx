// Header lines, query parameters, cookies: name/value tables.
import type { Headers } from "../api";
import { diffHeaders } from "../headers";

export function Pairs({ pairs, empty }: { pairs: [string, string][]; empty?: string }) {
  if (!pairs.length) return <div className="muted">{empty ?? "None."}</div>;
  return (
    <table className="kv">
      <tbody>
        {pairs.map(([name, value], i) => <tr key={i}><th>{name}</th><td>{value}</td></tr>)}
      </tbody>
    </table>
  );
}

/** The head as received and, when plugins changed it, as sent (changes marked). */
export function HeadTable({ received, sent, label }: { received: Headers | null; sent: Headers | null; label: string }) {
  if (!received) return <div className="muted">No {label} head.</div>;
  if (!sent) return <Pairs pairs={received} />;
  const diff = diffHeaders(received, sent);
  return (
    <div>
      <div className="subhead">As received</div>
      <Pairs pairs={received} />
      <div className="subhead">As sent (after the proxy and plugins)</div>
      <table className="kv">
        <tbody>
          {diff.sent.map(([name, value, change], i) => (
            <tr key={i} className={`h-${change}`}><th>{name}</th><td>{value}</td><td className="muted">{change === "same" ? "" : change}</td></tr>
          ))}
          {diff.removed.map(([name, value], i) => (
            <tr key={`r${i}`} className="h-removed"><th>{name}</th><td>{value}</td><td className="muted">removed</td></tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
