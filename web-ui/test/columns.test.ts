import { describe, expect, it } from "vitest";
import { COLUMNS, DEFAULT_STATE, gridTemplate, loadColumns, MIN_WIDTH, nextSort, resized, saveColumns, stretchColumn, toggled, visibleColumns } from "../src/columns";

class MemoryStorage {
  items = new Map<string, string>();
  getItem(key: string) { return this.items.get(key) ?? null; }
  setItem(key: string, value: string) { this.items.set(key, value); }
}

describe("columns", () => {
  it("cycles a header's sort: ascending, descending, arrival order", () => {
    const first = nextSort(null, "status");
    expect(first).toEqual({ key: "status", descending: false });
    const second = nextSort(first, "status");
    expect(second).toEqual({ key: "status", descending: true });
    expect(nextSort(second, "status")).toBeNull();
    expect(nextSort(second, "host")).toEqual({ key: "host", descending: false });
  });

  it("remembers widths, hidden columns and the sort, and ignores what it does not know", () => {
    const storage = new MemoryStorage();
    let state = resized(DEFAULT_STATE, "host", 251.6);
    state = toggled(state, "type");
    state = { ...state, sort: { key: "duration", descending: true } };
    saveColumns(state, storage);
    expect(loadColumns(storage)).toEqual({ widths: { host: 252 }, hidden: ["type"], sort: { key: "duration", descending: true } });
    storage.setItem("nectoproxy.columns", JSON.stringify({ widths: { host: "wide", nope: 3, path: 5 }, hidden: ["nope", 4], sort: { key: "colour" } }));
    expect(loadColumns(storage)).toEqual({ widths: { path: MIN_WIDTH }, hidden: [], sort: null });
    storage.setItem("nectoproxy.columns", "{not json");
    expect(loadColumns(storage)).toEqual(DEFAULT_STATE);
  });

  it("hides and shows columns but keeps one, and lays out the grid", () => {
    let state = DEFAULT_STATE;
    for (const column of COLUMNS) state = toggled(state, column.id);
    expect(visibleColumns(state).map((c) => c.id)).toEqual(["time"]);
    expect(toggled(state, "host").hidden).not.toContain("host");
    const template = gridTemplate(resized(toggled(DEFAULT_STATE, "proto"), "status", 90));
    expect(template.match(/minmax\([^)]*\)|\d+px/g)).toHaveLength(COLUMNS.length - 1);
    expect(template).toContain("90px");
    expect(template).toContain(`minmax(${2 * MIN_WIDTH}px, 1fr)`);  // the path takes the rest
    expect(stretchColumn(toggled(DEFAULT_STATE, "path"))).toBe("time");
    expect(visibleColumns(DEFAULT_STATE, true).map((c) => c.id)).toEqual(["num", "method", "status", "host", "path"]);
  });
});
