// tus-js-client (in Node) for scripts/bench: upload FILEs to ENDPOINT, CONCURRENCY at a
// time, in CHUNK-byte PATCHes (0: tus-js-client's default, the whole file in one).
//
//   node tusjs.mjs ENDPOINT CONCURRENCY CHUNK FILE...
//
// Files are given as fs.ReadStream with a path, which tus-js-client reads from disk.
import fs from "node:fs";
import path from "node:path";
import { Upload } from "tus-js-client";

const [endpoint, concurrency, chunk, ...files] = process.argv.slice(2);
if (!endpoint || files.length === 0) {
  console.error("usage: node tusjs.mjs ENDPOINT CONCURRENCY CHUNK FILE...");
  process.exit(2);
}
const chunkSize = Number(chunk) > 0 ? Number(chunk) : Infinity;

function upload(file) {
  return new Promise((resolve, reject) => {
    const up = new Upload(fs.createReadStream(file), {
      endpoint,
      uploadSize: fs.statSync(file).size,
      chunkSize,
      retryDelays: null,
      metadata: { filename: path.basename(file) },
      onError: reject,
      onSuccess: resolve,
    });
    up.start();
  });
}

let next = 0;
async function worker() {
  while (next < files.length) {
    await upload(files[next++]);
  }
}
await Promise.all(Array.from({ length: Number(concurrency) || 1 }, worker));
