// A body, shown by what it is: images rendered, JSON pretty (or as a tree), text with line
// numbers, binary as hex. Only a bounded prefix is fetched at first ("load more" asks for
// more), so a body of any size never freezes the page.
import { useEffect, useMemo, useState, type ReactNode } from "react";
import { ApiError, bodyUrl, fetchBodyPrefix } from "../api";
import { bodyKind, hexDump, prettyJson, trimUtf8 } from "../bodyKind";
import { formatSize, mediaType } from "../format";
import { JsonTree } from "./JsonTree";

export const FIRST_BYTES = 256 * 1024;
/** The most shown in the page (more is for Download): drawing more text would stall it. */
const MAX_BYTES = 4 * 1024 * 1024;
const MAX_HEX = 512 * 1024;

export interface BodyProps {
  flowId: string;
  direction: "request" | "response";
  contentType: string | null;
  encoding: string;
  stored: number;
  truncated: boolean;
  version: number;
}

interface Loaded {
  bytes: Uint8Array;
  complete: boolean;
  decoded: boolean;
}

function Lines({ text }: { text: string }) {
  const count = useMemo(() => {
    let lines = 1;
    for (let i = 0; i < text.length; i += 1) if (text.charCodeAt(i) === 10) lines += 1;
    return lines;
  }, [text]);
  const gutter = useMemo(() => Array.from({ length: count }, (_, i) => i + 1).join("\n"), [count]);
  return (
    <div className="code">
      <pre className="gutter" aria-hidden="true">{gutter}</pre>
      <pre className="text">{text}</pre>
    </div>
  );
}

export function BodyViewer({ flowId, direction, contentType, encoding, stored, truncated, version }: BodyProps) {
  const [limit, setLimit] = useState(FIRST_BYTES);
  const [loaded, setLoaded] = useState<Loaded | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [mode, setMode] = useState<"auto" | "tree" | "raw" | "hex">("auto");
  const media = mediaType(contentType);
  const image = media.startsWith("image/") && media !== "image/svg+xml";

  useEffect(() => {
    setLimit(FIRST_BYTES);
    setMode("auto");
    setLoaded(null);
  }, [flowId, direction]);

  useEffect(() => {
    if (image || stored === 0) {
      setLoaded(null);
      return;
    }
    const controller = new AbortController();
    setError(null);
    (async () => {
      try {
        try {
          const result = await fetchBodyPrefix(bodyUrl(flowId, direction, !!encoding), limit, controller.signal);
          setLoaded({ bytes: result.bytes, complete: result.complete, decoded: !!encoding });
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 415)) throw err;
          const result = await fetchBodyPrefix(bodyUrl(flowId, direction, false), limit, controller.signal);
          setLoaded({ bytes: result.bytes, complete: result.complete, decoded: false });
          setError(`${err.message} (showing the encoded bytes)`);
        }
      } catch (err) {
        if (controller.signal.aborted) return;
        setError(err instanceof Error ? err.message : String(err));
      }
    })();
    return () => controller.abort();
  }, [flowId, direction, encoding, limit, image, stored, version]);

  const view = useMemo(() => {
    if (!loaded) return null;
    const kind = bodyKind(contentType, loaded.bytes);
    const bytes = loaded.complete ? loaded.bytes : trimUtf8(loaded.bytes);
    const text = kind === "binary" || kind === "empty" ? "" : new TextDecoder().decode(bytes);
    const json = kind === "json" && loaded.complete ? prettyJson(text) : null;
    return { kind, text, json };
  }, [loaded, contentType]);

  if (stored === 0) return <div className="muted">No body{truncated ? " stored" : ""}.</div>;
  const url = bodyUrl(flowId, direction, !!encoding);
  const download = (
    <a className="button ghost" href={bodyUrl(flowId, direction, false)} download={`${flowId}-${direction}.body`}>Download</a>
  );
  if (image) {
    return (
      <div className="body">
        <div className="body-tools"><span className="muted">{media}, {formatSize(stored)}</span>{download}</div>
        <img className="body-image" src={url} alt={`${direction} body`} />
      </div>
    );
  }
  const kinds: ("auto" | "tree" | "raw" | "hex")[] = view?.kind === "json" && view.json ? ["auto", "tree", "raw", "hex"] : ["auto", "hex"];
  let content: ReactNode = <div className="muted">Loading…</div>;
  if (loaded && view) {
    if (mode === "hex" || view.kind === "binary") content = (
      <>
        <pre className="hex">{hexDump(loaded.bytes, MAX_HEX)}</pre>
        {loaded.bytes.length > MAX_HEX && <div className="muted">The hex view shows the first {formatSize(MAX_HEX)}: Download has it all.</div>}
      </>
    );
    else if (mode === "tree" && view.json) content = <JsonTree value={view.json.value} />;
    else if (mode === "auto" && view.json) content = <Lines text={view.json.pretty} />;
    else content = <Lines text={view.text} />;
  }
  return (
    <div className="body" data-testid={`${direction}-body`}>
      <div className="body-tools">
        <span className="muted">
          {media || "no type"}, {formatSize(stored)} stored{encoding ? `, ${encoding}${loaded?.decoded ? " (decoded)" : ""}` : ""}
          {truncated ? ", truncated in storage" : ""}
        </span>
        {kinds.length > 1 && kinds.map((k) => (
          <button key={k} className={`tab${mode === k ? " active" : ""}`} onClick={() => setMode(k)}>
            {k === "auto" ? (view?.json ? "pretty" : "text") : k}
          </button>
        ))}
        {download}
      </div>
      {error && <div className="error-text">{error}</div>}
      {content}
      {loaded && !loaded.complete && (
        limit < MAX_BYTES ? (
          <button className="load-more" onClick={() => setLimit(Math.min(limit * 4, MAX_BYTES))}>
            Load more (showing the first {formatSize(loaded.bytes.length)} of {formatSize(stored)})
          </button>
        ) : (
          <div className="muted">Showing the first {formatSize(loaded.bytes.length)} of {formatSize(stored)}: Download has it all.</div>
        )
      )}
    </div>
  );
}
