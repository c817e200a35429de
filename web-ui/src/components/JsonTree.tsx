// A collapsible JSON tree; big objects and arrays show their first entries, then "more".
import { useState } from "react";

const SHOWN = 200;

function Leaf({ value }: { value: unknown }) {
  if (value === null) return <span className="j-null">null</span>;
  if (typeof value === "string") return <span className="j-string">{JSON.stringify(value)}</span>;
  if (typeof value === "number") return <span className="j-number">{String(value)}</span>;
  if (typeof value === "boolean") return <span className="j-bool">{String(value)}</span>;
  return <span>{String(value)}</span>;
}

function Node({ name, value, depth }: { name: string | null; value: unknown; depth: number }) {
  const [open, setOpen] = useState(depth < 2);
  const [shown, setShown] = useState(SHOWN);
  const label = name === null ? null : <span className="j-key">{name}: </span>;
  if (value === null || typeof value !== "object") {
    return <div className="j-row">{label}<Leaf value={value} /></div>;
  }
  const entries: [string, unknown][] = Array.isArray(value)
    ? value.map((v, i): [string, unknown] => [String(i), v])
    : Object.entries(value as Record<string, unknown>);
  const [start, end] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return (
    <div className="j-row">
      <button className="j-toggle" onClick={() => setOpen(!open)} aria-expanded={open}>{open ? "▾" : "▸"}</button>
      {label}{start}{!open && <span className="muted"> {entries.length} {Array.isArray(value) ? "items" : "keys"} </span>}{!open && end}
      {open && (
        <div className="j-children">
          {entries.slice(0, shown).map(([key, child]) => <Node key={key} name={key} value={child} depth={depth + 1} />)}
          {entries.length > shown && (
            <button className="ghost" onClick={() => setShown(shown + SHOWN * 5)}>… {entries.length - shown} more</button>
          )}
        </div>
      )}
      {open && end}
    </div>
  );
}

export function JsonTree({ value }: { value: unknown }) {
  return <div className="json-tree"><Node name={null} value={value} depth={0} /></div>;
}
