// The bundle goes into the Python package (nectoproxy/web/static/), committed and shipped in
// the wheel: index.html names the hashed assets, which the server caches for a year.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "../nectoproxy/web/static",
    emptyOutDir: true,
    assetsDir: "assets",
    modulePreload: { polyfill: false },
    sourcemap: false,
    chunkSizeWarningLimit: 1000,
  },
});
