// The real tus server that tusflow's tests and demo talk to: the official Node server
// (@tus/server) storing uploads with @tus/file-store in a directory.
//
//   node server.mjs --dir DIR [--port N] [--relative-location] [--max-size BYTES]
//                   [--require-header NAME=VALUE] [--expiration-ms N]
//                   [--tls-cert PEM --tls-key PEM]
//
// --expiration-ms makes unfinished uploads expire N ms after creation (Upload-Expires,
// then 410 Gone).
// --require-header answers 401 to every tus request without that header and value (to
// test that a client's headers reach the server).
// --tls-cert and --tls-key serve HTTPS with that certificate (the endpoint is https://).
// It binds to 127.0.0.1 only (port 0 = a free port chosen by the OS) and prints one JSON
// line once it listens: {"port": N, "endpoint": "http://127.0.0.1:N/files/", "dir": DIR}.
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createServer as createTlsServer } from "node:https";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const { values } = parseArgs({
  options: {
    dir: { type: "string" },
    port: { type: "string", default: "0" },
    "relative-location": { type: "boolean", default: false },
    "max-size": { type: "string" },
    "require-header": { type: "string" },
    "expiration-ms": { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
  },
});
if (!values.dir) {
  console.error("server.mjs: --dir DIR is required");
  process.exit(2);
}
const dir = resolve(values.dir);
mkdirSync(dir, { recursive: true });

const options = {
  path: "/files",
  datastore: new FileStore({
    directory: dir,
    expirationPeriodInMilliseconds: Number(values["expiration-ms"] ?? 0),
  }),
  relativeLocation: values["relative-location"],
};
if (values["max-size"]) options.maxSize = Number(values["max-size"]);
if (values["require-header"]) {
  const eq = values["require-header"].indexOf("=");
  const name = values["require-header"].slice(0, eq).toLowerCase();
  const value = values["require-header"].slice(eq + 1);
  options.onIncomingRequest = async (req) => {
    if (req.headers.get(name) !== value) {
      throw { status_code: 401, body: "unauthorized" };
    }
  };
}

const tus = new Server(options);
// @tus/server does not read X-HTTP-Method-Override (tusd does); honour it here so the
// client's override switch is tested against this server too.
const handler = (req, res) => {
  const override = req.headers["x-http-method-override"];
  if (req.method === "POST" && override) req.method = String(override).toUpperCase();
  tus.handle(req, res);
};
const tls = values["tls-cert"]
  ? { cert: readFileSync(values["tls-cert"]), key: readFileSync(values["tls-key"]) }
  : null;
const http = tls ? createTlsServer(tls, handler) : createServer(handler);
http.listen({ host: "127.0.0.1", port: Number(values.port) }, () => {
  const { port } = http.address();
  const endpoint = `${tls ? "https" : "http"}://127.0.0.1:${port}/files/`;
  process.stdout.write(JSON.stringify({ port, endpoint, dir }) + "\n");
});
// Long uploads on a slow machine must not hit node's default request timeout.
http.requestTimeout = 0;
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
