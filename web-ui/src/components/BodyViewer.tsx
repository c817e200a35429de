// A body, shown by what it is: images rendered, JSON pretty (or as a tree), text with line
// numbers, binary as hex. Only a bounded prefix is fetched at first ("load more" asks for
// more), and of text only the lines in view are drawn, so a body of any size never freezes
// the page.
import { useVirtualizer } from "@tanstack/react-virtual";
import { useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { ApiError, bodyUrl, fetchBodyPrefix } from "../api";
import { bodyKind, hexDump, prettyJson, trimUtf8 } from "../bodyKind";
import { formatSize, mediaType } from "../format";
import { JsonTree } from "./JsonTree";

export const FIRST_BYTES = 256 * 1024;
/** The most shown in the page (more is for Download): drawing more text would stall it. */
const MAX_BYTES = 4 * 1024 * 1024;
const MAX_HEX = 512 * 1024;
/** Pixels: the line height of .code-line in styles.css. */
const LINE_HEIGHT = 17;

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

/** Text as lines, only those in view drawn: laying out a <pre> of 100,000 lines takes the
 * browser seconds (ui_figures.py measured 2 s for a 1 MiB JSON body, pretty-printed). */
function Lines({ text, numbers = true }: { text: string; numbers?: boolean }) {
  const lines = useMemo(() => text.split("\n"), [text]);
  const scroller = useRef<HTMLDivElement>(null);
  const virtualizer = useVirtualizer({
    count: lines.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => LINE_HEIGHT,
    overscan: 40,
  });
  const gutter = `${String(lines.length).length + 1}ch`;
  return (
    <div className="code" ref={scroller}>
      <div className="code-lines" style={{ height: virtualizer.getTotalSize() }}>
        {virtualizer.getVirtualItems().map((item) => (
          <div key={item.index} className="code-line" style={{ transform: `translateY(${item.start}px)` }}>
            {numbers && <span className="gutter" style={{ width: gutter }} aria-hidden="true">{item.index + 1}</span>}
            <span className="text">{lines[item.index]}</span>
          </div>
        ))}
      </div>
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
        <Lines text={hexDump(loaded.bytes, MAX_HEX)} numbers={false} />
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
