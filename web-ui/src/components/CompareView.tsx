// Two flows compared: request heads, response heads and both bodies, as a line diff side by
// side or unified (the older flow on the left). Bodies are compared on their first MiB (text)
// or by size and sha256 (anything else), so a large body never stalls the page.
import { useEffect, useMemo, useState } from "react";
import { api, bodyUrl, fetchBodyPrefix, type FlowRecord } from "../api";
import { compareBodies, headLines, type BodyComparison, type Digest, type LoadedBody } from "../compare";
import { diffLines, sideRows, unifiedRows, type DiffResult } from "../diff";
import { formatSize } from "../format";
import { header } from "../headers";
import { Modal } from "./Modals";

/** Text bodies: the bytes compared line by line. */
const DIFF_BYTES = 1024 * 1024;
/** Other bodies: the bytes hashed. */
const HASH_BYTES = 64 * 1024 * 1024;

type Mode = "side" | "unified";

function skipText(lines: number): string {
  return `⋯ ${lines.toLocaleString("en-US")} unchanged line${lines === 1 ? "" : "s"}`;
}

function DiffTable({ result, mode }: { result: DiffResult; mode: Mode }) {
  const side = useMemo(() => (result.ops && mode === "side" ? sideRows(result.ops) : null), [result, mode]);
  const unified = useMemo(() => (result.ops && mode === "unified" ? unifiedRows(result.ops) : null), [result, mode]);
  if (result.tooLarge) return <div className="muted">Not compared line by line: {result.tooLarge}.</div>;
  if (side) {
    return (
      <table className="diff side-by-side"><tbody>
        {side.map((row, i) => (row.kind === "skip"
          ? <tr key={i} className="d-skip"><td colSpan={4}>{skipText(row.lines)}</td></tr>
          : <tr key={i} className={`d-${row.kind}`}>
            <td className="d-n">{row.left?.n}</td><td className={row.left && row.kind === "changed" ? "d-del" : ""}>{row.left?.text}</td>
            <td className="d-n">{row.right?.n}</td><td className={row.right && row.kind === "changed" ? "d-add" : ""}>{row.right?.text}</td>
          </tr>))}
      </tbody></table>
    );
  }
  return (
    <table className="diff unified"><tbody>
      {(unified ?? []).map((row, i) => (row.kind === "skip"
        ? <tr key={i} className="d-skip"><td colSpan={4}>{skipText(row.lines)}</td></tr>
        : <tr key={i} className={`d-${row.kind}`}>
          <td className="d-n">{row.a}</td><td className="d-n">{row.b}</td>
          <td className="d-sign">{row.kind === "del" ? "-" : row.kind === "add" ? "+" : " "}</td><td>{row.text}</td>
        </tr>))}
    </tbody></table>
  );
}

function Verdict({ result, what }: { result: DiffResult; what: string }) {
  const changes = result.ops?.filter((op) => op.kind !== "same").length ?? null;
  if (changes === 0) return <span className="muted">identical {what}</span>;
  return <span className="muted">{changes === null ? "" : `${changes} line${changes === 1 ? "" : "s"} removed or added`}</span>;
}

function HeadDiff({ title, left, right, mode, testId }: { title: string; left: string[]; right: string[]; mode: Mode; testId: string }) {
  const result = useMemo(() => diffLines(left, right), [left, right]);
  return (
    <section className="compare-part" data-testid={testId}>
      <h3>{title} <Verdict result={result} what="heads" /></h3>
      {result.ops?.some((op) => op.kind !== "same") !== false && <DiffTable result={result} mode={mode} />}
    </section>
  );
}

function digestText(digest: Digest): string {
  return `${formatSize(digest.size)} · sha256 ${digest.sha256}${digest.partial ? " (of the first bytes fetched)" : ""}`;
}

async function loadBody(flow: FlowRecord, direction: "request" | "response", limit: number, signal: AbortSignal): Promise<LoadedBody> {
  const stored = direction === "request" ? flow.requestStored : flow.responseStored;
  const encoding = direction === "request" ? flow.requestBodyEncoding : flow.responseBodyEncoding;
  const size = (direction === "request" ? flow.requestSizeDecoded ?? flow.requestSize : flow.responseSizeDecoded ?? flow.responseSize) ?? stored;
  const contentType = direction === "request" ? header(flow.requestHeaders, "content-type") : flow.contentType;
  if (stored === 0) return { bytes: new Uint8Array(0), complete: true, contentType, size: 0 };
  const prefix = await fetchBodyPrefix(bodyUrl(flow.id, direction, !!encoding), limit, signal);
  return { bytes: prefix.bytes, complete: prefix.complete, contentType, size: prefix.complete ? prefix.bytes.length : size };
}

function BodyDiff({ title, flows, direction, mode, testId }: {
  title: string; flows: [FlowRecord, FlowRecord]; direction: "request" | "response"; mode: Mode; testId: string;
}) {
  const [comparison, setComparison] = useState<BodyComparison | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const controller = new AbortController();
    (async () => {
      let bodies = await Promise.all(flows.map((flow) => loadBody(flow, direction, DIFF_BYTES, controller.signal)));
      let result = await compareBodies(bodies[0], bodies[1]);
      if (result.kind === "binary" && bodies.some((body) => !body.complete)) {
        bodies = await Promise.all(flows.map((flow) => loadBody(flow, direction, HASH_BYTES, controller.signal)));
        result = await compareBodies(bodies[0], bodies[1]);
      }
      if (!controller.signal.aborted) setComparison(result);
    })().catch((err) => { if (!controller.signal.aborted) setError(err instanceof Error ? err.message : String(err)); });
    return () => controller.abort();
  }, [flows, direction]);
  let content;
  if (error) content = <div className="error-text">{error}</div>;
  else if (!comparison) content = <div className="muted">Loading…</div>;
  else if (comparison.kind === "empty") content = <div className="muted">Both empty.</div>;
  else if (comparison.kind === "binary") {
    content = (
      <div>
        <div className="verdict">{comparison.identical ? "Binary bodies are identical" : "Binary bodies differ"}</div>
        <table className="kv"><tbody>
          <tr><th>left</th><td>{digestText(comparison.left)}</td></tr>
          <tr><th>right</th><td>{digestText(comparison.right)}</td></tr>
        </tbody></table>
      </div>
    );
  } else {
    const changed = comparison.result.ops?.some((op) => op.kind !== "same") !== false;
    content = (
      <>
        <div className="muted">
          {comparison.format === "json" ? "JSON, pretty-printed with keys sorted" : "text"}
          {` · ${comparison.lines[0].toLocaleString("en-US")} and ${comparison.lines[1].toLocaleString("en-US")} lines`}
          {comparison.partial ? ` · only the first ${formatSize(DIFF_BYTES)} of each compared` : ""}
          {" · "}<Verdict result={comparison.result} what="bodies" />
        </div>
        {changed && <DiffTable result={comparison.result} mode={mode} />}
      </>
    );
  }
  return <section className="compare-part" data-testid={testId}><h3>{title}</h3>{content}</section>;
}

export function CompareView({ ids, onClose }: { ids: [string, string]; onClose: () => void }) {
  const [flows, setFlows] = useState<[FlowRecord, FlowRecord] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [mode, setMode] = useState<Mode>("side");
  useEffect(() => {
    const controller = new AbortController();
    Promise.all(ids.map((id) => api.flow(id, controller.signal))).then((records) => {
      const [a, b] = [...records].sort((x, y) => x.seq - y.seq);
      setFlows([a, b]);
    }, (err) => { if (!controller.signal.aborted) setError(err instanceof Error ? err.message : String(err)); });
    return () => controller.abort();
  }, [ids]);
  const heads = useMemo(() => flows && {
    request: [headLines(flows[0], "request"), headLines(flows[1], "request")] as const,
    response: [headLines(flows[0], "response"), headLines(flows[1], "response")] as const,
  }, [flows]);
  return (
    <Modal title="Compare flows" onClose={onClose} wide>
      <div className="compare-tools">
        <span className="group" role="group" aria-label="Diff layout">
          <button className={mode === "side" ? "active" : ""} aria-pressed={mode === "side"} onClick={() => setMode("side")}>Side by side</button>
          <button className={mode === "unified" ? "active" : ""} aria-pressed={mode === "unified"} onClick={() => setMode("unified")}>Unified</button>
        </span>
        {flows && <span className="muted compare-names">left: #{flows[0].seq} {flows[0].method} {flows[0].url} · right: #{flows[1].seq} {flows[1].method} {flows[1].url}</span>}
      </div>
      {error && <div className="error-text">{error}</div>}
      {!flows && !error && <div className="muted">Loading…</div>}
      {flows && heads && (
        <>
          <HeadDiff title="Request head" left={heads.request[0]} right={heads.request[1]} mode={mode} testId="compare-request-head" />
          <HeadDiff title="Response head" left={heads.response[0]} right={heads.response[1]} mode={mode} testId="compare-response-head" />
          <BodyDiff title="Request body" flows={flows} direction="request" mode={mode} testId="compare-request-body" />
          <BodyDiff title="Response body" flows={flows} direction="response" mode={mode} testId="compare-response-body" />
        </>
      )}
    </Modal>
  );
}
