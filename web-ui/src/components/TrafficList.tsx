// The traffic list: virtualized rows, oldest at the top and the newest at the bottom, which
// it follows while the user stays there (scrolling up pauses that; the button resumes it).
import { memo, useCallback, useEffect, useLayoutEffect, useRef, useState, type MouseEvent } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import type { FlowSummary } from "../api";
import { formatClock, formatDuration, formatSize, mediaType, statusClass } from "../format";
import type { RowCache } from "../rowCache";

export const ROW_HEIGHT = 24;

export interface ListProps {
  cache: RowCache;
  version: number;
  selected: ReadonlySet<string>;
  focus: number | null;
  onSelect: (index: number, flow: FlowSummary, event: { shift: boolean; toggle: boolean }) => void;
  onOpen: (index: number) => void;
  onQuickFilter: (field: "host" | "status", value: string) => void;
  scrollRequest: { index: number; nonce: number } | null;
}

const COLUMNS = ["#", "Method", "Status", "Host", "Path", "Type", "Size", "Duration", "Protocol", "Time"];

function protocol(flow: FlowSummary): string {
  if (flow.kind === "tunnel") return "tunnel";
  const version = flow.httpVersion.replace("HTTP/", "h");
  return `${flow.scheme === "https" ? "TLS " : ""}${version}${flow.websocket ? " ws" : ""}`;
}

const Row = memo(function Row({ flow, index, top, selected, focused, onSelect, onOpen, onQuickFilter }: {
  flow: FlowSummary | undefined; index: number; top: number; selected: boolean; focused: boolean;
  onSelect: ListProps["onSelect"]; onOpen: ListProps["onOpen"]; onQuickFilter: ListProps["onQuickFilter"];
}) {
  const style = { transform: `translateY(${top}px)` };
  if (!flow) {
    return <div className="row placeholder" style={style} role="row" aria-busy="true"><span className="c-num">{index + 1}</span><span>…</span></div>;
  }
  const cls = statusClass(flow.status, flow.error);
  const quick = (field: "host" | "status", value: string) => (event: MouseEvent) => {
    if (!event.altKey) return;
    event.stopPropagation();
    event.preventDefault();
    onQuickFilter(field, value);
  };
  return (
    <div
      className={`row${selected ? " selected" : ""}${focused ? " focused" : ""}${flow.mark ? ` mark-${flow.mark}` : ""}`}
      style={style} role="row" aria-selected={selected} data-id={flow.id} data-index={index}
      onMouseDown={(event) => { if (event.shiftKey) event.preventDefault(); }}
      onClick={(event) => onSelect(index, flow, { shift: event.shiftKey, toggle: event.ctrlKey || event.metaKey })}
      onDoubleClick={() => onOpen(index)}
    >
      <span className="c-num">{index + 1}</span>
      <span className="c-method">{flow.method || flow.kind}</span>
      <span className={`c-status s-${cls}`} onClick={quick("status", String(flow.status ?? ""))}
        title={flow.error ?? flow.reason ?? ""}>{flow.status ?? (flow.error ? "error" : "…")}</span>
      <span className="c-host" onClick={quick("host", flow.host)} title={`${flow.host} (Alt+click: filter by host)`}>{flow.host}</span>
      <span className="c-path" title={flow.url}>{flow.path}</span>
      <span className="c-type">{mediaType(flow.contentType)}</span>
      <span className="c-size">{formatSize(flow.responseSize)}</span>
      <span className="c-duration">{formatDuration(flow.duration)}</span>
      <span className="c-proto">{protocol(flow)}</span>
      <span className="c-time">{formatClock(flow.startedAt)}</span>
    </div>
  );
});

export function TrafficList({ cache, version, selected, focus, onSelect, onOpen, onQuickFilter, scrollRequest }: ListProps) {
  const scroller = useRef<HTMLDivElement>(null);
  const follow = useRef(true);
  const [following, setFollowing] = useState(true);
  const count = cache.count();
  const virtualizer = useVirtualizer({
    count,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 15,
  });
  const items = virtualizer.getVirtualItems();
  const first = items.length ? items[0].index : 0;
  const last = items.length ? items[items.length - 1].index : -1;

  useEffect(() => {
    if (last < first) return;
    // display index (oldest first) -> the cache's index (newest first)
    cache.ensure(count - 1 - last, count - 1 - first);
  }, [cache, version, count, first, last]);

  useLayoutEffect(() => {
    const element = scroller.current;
    if (element && follow.current) element.scrollTop = element.scrollHeight;
  }, [count, cache]);

  useEffect(() => {
    if (!scrollRequest) return;
    virtualizer.scrollToIndex(scrollRequest.index, { align: "auto" });
  }, [scrollRequest, virtualizer]);

  const onScroll = useCallback(() => {
    const element = scroller.current;
    if (!element) return;
    const atBottom = element.scrollTop + element.clientHeight >= element.scrollHeight - ROW_HEIGHT * 1.5;
    follow.current = atBottom;
    setFollowing(atBottom);
  }, []);

  const resume = () => {
    follow.current = true;
    setFollowing(true);
    const element = scroller.current;
    if (element) element.scrollTop = element.scrollHeight;
  };

  return (
    <div className="list" role="grid" aria-rowcount={count}>
      <div className="row header" role="row">
        {COLUMNS.map((name) => <span key={name} role="columnheader">{name}</span>)}
      </div>
      <div className="list-body" ref={scroller} onScroll={onScroll} data-testid="list-body">
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {items.map((item) => {
            const flow = cache.rowAt(count - 1 - item.index);
            return (
              <Row key={item.key} flow={flow} index={item.index} top={item.start}
                selected={!!flow && selected.has(flow.id)} focused={focus === item.index}
                onSelect={onSelect} onOpen={onOpen} onQuickFilter={onQuickFilter} />
            );
          })}
        </div>
        {count === 0 && <div className="empty">No flows yet: send traffic through the proxy.</div>}
      </div>
      {!following && count > 0 && (
        <button className="follow" onClick={resume} title="Follow new flows">⤓ follow new flows</button>
      )}
    </div>
  );
}
