// The traffic list's header: click a column to sort by it (again: reversed; a third time:
// arrival order), drag its right edge to resize it, right-click (or ⋮) to choose the columns.
import { useEffect, useRef, useState, type PointerEvent } from "react";
import { COLUMNS, resized, toggled, type Column, type ColumnState } from "../columns";

export interface ColumnHeaderProps {
  columns: ColumnState;
  /** The column that fills the rest (not resized by hand). */
  stretch: string | undefined;
  shown: Column[];
  template: string;
  /** The width of the rows' scrollbar. */
  gutter: number;
  widthOf: (column: Column) => number;
  onColumns: (columns: ColumnState) => void;
  onSort: (column: Column) => void;
}

export function ColumnHeader({ columns, stretch, shown, template, gutter, widthOf, onColumns, onSort }: ColumnHeaderProps) {
  const [menu, setMenu] = useState<{ x: number; y: number } | null>(null);
  const drag = useRef<{ id: string; x: number; width: number } | null>(null);
  const menuRef = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (!menu) return;
    const close = (event: Event) => {
      if (event instanceof KeyboardEvent ? event.key !== "Escape"
        : event.target instanceof Node && menuRef.current?.contains(event.target)) return;
      setMenu(null);
    };
    window.addEventListener("mousedown", close);
    window.addEventListener("keydown", close);
    return () => { window.removeEventListener("mousedown", close); window.removeEventListener("keydown", close); };
  }, [menu]);

  const startResize = (column: Column) => (event: PointerEvent<HTMLSpanElement>) => {
    event.preventDefault();
    event.stopPropagation();
    event.currentTarget.setPointerCapture(event.pointerId);
    drag.current = { id: column.id, x: event.clientX, width: widthOf(column) };
  };
  const moveResize = (event: PointerEvent<HTMLSpanElement>) => {
    const current = drag.current;
    if (current) onColumns(resized(columns, current.id, current.width + event.clientX - current.x));
  };
  const endResize = () => { drag.current = null; };

  const sortOf = (column: Column): "ascending" | "descending" | "none" | undefined => {
    if (column.sort === "none") return undefined;
    if (column.sort === null) return columns.sort === null && column.id === "num" ? "ascending" : "none";
    if (columns.sort?.key !== column.sort) return "none";
    return columns.sort.descending ? "descending" : "ascending";
  };

  return (
    <div className="row header" role="row" style={{ gridTemplateColumns: template, paddingRight: 6 + gutter }}
      onContextMenu={(event) => { event.preventDefault(); setMenu({ x: event.clientX, y: event.clientY }); }}>
      {shown.map((column) => {
        const sort = sortOf(column);
        const arrow = column.sort !== null && sort === "ascending" ? " ▲" : sort === "descending" ? " ▼" : "";
        return (
          <span key={column.id} role="columnheader" aria-sort={sort} data-column={column.id}
            className={`col-head${column.sort !== "none" ? " sortable" : ""}`}
            title={column.sort === "none" ? column.label : column.sort === null ? "Arrival order" : `Sort by ${column.label.toLowerCase()}`}
            tabIndex={column.sort === "none" ? undefined : 0} onClick={() => onSort(column)}
            onKeyDown={(event) => {
              if (event.key !== "Enter" && event.key !== " ") return;
              event.preventDefault();
              event.stopPropagation();  // (Enter elsewhere opens the detail)
              onSort(column);
            }}>
            {column.label}{arrow}
            {column.id !== stretch && (
              <span className="col-resize" aria-hidden="true" onPointerDown={startResize(column)} onPointerMove={moveResize}
                onPointerUp={endResize} onPointerCancel={endResize} onClick={(event) => event.stopPropagation()} />
            )}
          </span>
        );
      })}
      <button className="ghost col-menu-button" aria-label="Columns" title="Choose the columns"
        onClick={(event) => { const box = event.currentTarget.getBoundingClientRect(); setMenu({ x: box.right - 160, y: box.bottom }); }}>⋮</button>
      {menu && (
        <div className="col-menu" role="menu" aria-label="Columns" ref={menuRef} style={{ left: menu.x, top: menu.y }}>
          {COLUMNS.map((column) => (
            <label key={column.id} role="menuitemcheckbox" aria-checked={!columns.hidden.includes(column.id)}>
              <input type="checkbox" checked={!columns.hidden.includes(column.id)} onChange={() => onColumns(toggled(columns, column.id))} />
              {column.label}
            </label>
          ))}
          <button className="ghost" onClick={() => { onColumns({ ...columns, widths: {}, hidden: [] }); setMenu(null); }}>Reset columns</button>
        </div>
      )}
    </div>
  );
}
