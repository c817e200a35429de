// The traffic list: virtualized rows, oldest at the top and the newest at the bottom, which
// it follows while the user stays there (scrolling up pauses that; the button resumes it).
// Sorted by a column, it starts at the top and new flows wait behind "N new flows".
import { Fragment, memo, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, type MouseEvent, type ReactNode } from "react";
import { useVirtualizer } from "@tanstack/react-virtual";
import type { FlowSummary } from "../api";
import { gridTemplate, nextSort, stretchColumn, visibleColumns, widthOf, type Column, type ColumnState } from "../columns";
import { formatClock, formatDuration, formatSize, mediaType, protocolName, statusClass } from "../format";
import type { RowCache } from "../rowCache";
import { ColumnHeader } from "./ColumnHeader";

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
  columns: ColumnState;
  onColumns: (columns: ColumnState) => void;
  /** Fewer columns (the detail is open). */
  compact: boolean;
  /** Load the list again (to show the new flows of a sorted list). */
  onShowNew: () => void;
}

function protocol(flow: FlowSummary): string {
  if (flow.kind === "tunnel") return "tunnel";
  const version = protocolName(flow.httpVersion);
  return `${flow.scheme === "https" ? "TLS " : ""}${version}${flow.websocket ? " ws" : ""}`;
}

type Quick = (field: "host" | "status", value: string) => (event: MouseEvent) => void;

/** Each column's cell of a row. */
const CELLS: Record<string, (flow: FlowSummary, index: number, quick: Quick) => ReactNode> = {
  num: (_, index) => <span className="c-num">{index + 1}</span>,
  method: (flow) => <span className="c-method">{flow.method || flow.kind}</span>,
  status: (flow, _, quick) => (
    <span className={`c-status s-${statusClass(flow.status, flow.error)}`} onClick={quick("status", String(flow.status ?? ""))}
      title={flow.error ?? flow.reason ?? ""}>{flow.status ?? (flow.error ? "error" : "…")}</span>
  ),
  host: (flow, _, quick) => (
    <span className="c-host" onClick={quick("host", flow.host)} title={`${flow.host} (Alt+click: filter by host)`}>{flow.host}</span>
  ),
  path: (flow) => <span className="c-path" title={flow.url}>{flow.path}</span>,
  type: (flow) => <span className="c-type">{mediaType(flow.contentType)}</span>,
  size: (flow) => <span className="c-size">{formatSize(flow.responseSize)}</span>,
  duration: (flow) => <span className="c-duration">{formatDuration(flow.duration)}</span>,
  proto: (flow) => <span className="c-proto">{protocol(flow)}</span>,
  time: (flow) => <span className="c-time">{formatClock(flow.startedAt)}</span>,
};

const Row = memo(function Row({ flow, index, top, selected, focused, columns, template, onSelect, onOpen, onQuickFilter }: {
  flow: FlowSummary | undefined; index: number; top: number; selected: boolean; focused: boolean;
  columns: Column[]; template: string;
  onSelect: ListProps["onSelect"]; onOpen: ListProps["onOpen"]; onQuickFilter: ListProps["onQuickFilter"];
}) {
  const style = { transform: `translateY(${top}px)`, gridTemplateColumns: template };
  if (!flow) {
    return <div className="row placeholder" style={style} role="row" aria-busy="true"><span className="c-num">{index + 1}</span><span>…</span></div>;
  }
  const quick: Quick = (field, value) => (event) => {
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
      {columns.map((column) => <Fragment key={column.id}>{CELLS[column.id](flow, index, quick)}</Fragment>)}
    </div>
  );
});

export function TrafficList({ cache, version, selected, focus, onSelect, onOpen, onQuickFilter, scrollRequest, columns, onColumns,
  compact, onShowNew }: ListProps) {
  const scroller = useRef<HTMLDivElement>(null);
  const sorted = columns.sort !== null;
  const follow = useRef(!sorted);
  const [following, setFollowing] = useState(!sorted);
  // (the same objects from render to render, so the memoized rows are not drawn again)
  const shown = useMemo(() => visibleColumns(columns, compact), [columns, compact]);
  const template = useMemo(() => gridTemplate(columns, compact), [columns, compact]);
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

  // The header lines up with the rows, which are narrower by the list's scrollbar.
  const [gutter, setGutter] = useState(0);
  useLayoutEffect(() => {
    const element = scroller.current;
    if (element) setGutter(element.offsetWidth - element.clientWidth);
  });

  const sort = columns.sort;
  useLayoutEffect(() => {  // a new sort starts at its top, arrival order at the newest
    follow.current = sort === null;
    setFollowing(sort === null);
    if (scroller.current && sort !== null) scroller.current.scrollTop = 0;
  }, [sort]);

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
    follow.current = atBottom && !sorted;
    setFollowing(atBottom || sorted);
  }, [sorted]);

  const resume = () => {
    follow.current = true;
    setFollowing(true);
    const element = scroller.current;
    if (element) element.scrollTop = element.scrollHeight;
  };

  return (
    <div className="list" role="grid" aria-rowcount={count}>
      <ColumnHeader columns={columns} stretch={stretchColumn(columns, compact)} shown={shown} template={template} gutter={gutter} onColumns={onColumns}
        onSort={(column) => onColumns({ ...columns, sort: column.sort === "none" ? columns.sort
          : column.sort === null ? null : nextSort(columns.sort, column.sort) })}
        widthOf={(column) => widthOf(columns, column)} />
      {cache.newFlows > 0 && (
        <button className="new-flows" onClick={onShowNew} data-testid="new-flows"
          title="Sorted lists do not move under you: load the list again to see them in place">
          {cache.newFlows.toLocaleString()} new flow{cache.newFlows === 1 ? "" : "s"} · show
        </button>
      )}
      <div className="list-body" ref={scroller} onScroll={onScroll} data-testid="list-body">
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {items.map((item) => {
            const flow = cache.rowAt(count - 1 - item.index);
            return (
              <Row key={item.key} flow={flow} index={item.index} top={item.start}
                selected={!!flow && selected.has(flow.id)} focused={focus === item.index}
                columns={shown} template={template} onSelect={onSelect} onOpen={onOpen} onQuickFilter={onQuickFilter} />
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
