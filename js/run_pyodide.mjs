// Run a Python script inside Pyodide under Node, as a browser page would run it.
//
//   node js/run_pyodide.mjs SITE_DIR SCRIPT.py [ARGS...]
//
// SITE_DIR holds pure-Python packages (pbnb, msgpack's fallback, ...); it is
// mounted into Pyodide's file system and put on sys.path. Pyodide itself comes
// from js/node_modules (the npm package): nothing is fetched from a CDN. Node has
// no global WebSocket, so the `ws` package provides the browser's API. The
// script's exit status is 0 if the script finished, 1 if it raised.
import { loadPyodide } from "pyodide";
import { WebSocket } from "ws";
import fs from "node:fs";
import path from "node:path";

globalThis.WebSocket = WebSocket;

const [site, script, ...args] = process.argv.slice(2);
const pyodide = await loadPyodide({
  stdout: (line) => console.log(line),
  stderr: (line) => console.error(line),
});
pyodide.FS.mkdirTree("/site");
pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: path.resolve(site) }, "/site");
pyodide.globals.set("ARGV", pyodide.toPy([script, ...args]));
let status = 0;
try {
  await pyodide.runPythonAsync(`
import sys
sys.path.insert(0, "/site")
sys.argv = list(ARGV)
`);
  await pyodide.runPythonAsync(fs.readFileSync(script, "utf8"), { filename: script });
} catch (error) {
  // Only the Python traceback: Node would print the minified interpreter source first.
  console.error(String(error.message ?? error));
  status = 1;
}
process.exit(status);
