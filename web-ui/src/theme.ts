// Light, dark or the system's: the choice is kept in localStorage and set on <html>.
export type Theme = "light" | "dark" | "system";

const KEY = "nectoproxy.theme";

export function loadTheme(): Theme {
  const value = localStorage.getItem(KEY);
  return value === "light" || value === "dark" ? value : "system";
}

export function applyTheme(theme: Theme): void {
  localStorage.setItem(KEY, theme);
  document.documentElement.dataset.theme = theme;
}

export const FILTER_KEY = "nectoproxy.filter";
