// Upload one file with the real tus-js-client (4.3.1, from the npm registry) and
// `protocol: 'ietf-draft-05'` (interop 6), to check tusflow's draft test server
// against another client's reading of the draft.
//
//   node tus-js-upload.mjs ENDPOINT FILE [CHUNK_SIZE]
//
// Prints one JSON line: {"url": ..., "size": ...}, or {"error": ...} and exits 1.
import fs from 'node:fs';
import { Upload } from 'tus-js-client';

const [endpoint, file, chunk] = process.argv.slice(2);
const size = fs.statSync(file).size;
const input = process.env.TUS_JS_INPUT === "buffer" ? fs.readFileSync(file) : fs.createReadStream(file);
const upload = new Upload(input, {
  endpoint,
  protocol: 'ietf-draft-05',
  uploadSize: size,
  chunkSize: chunk ? Number(chunk) : 4 << 20,
  retryDelays: [0, 100, 200, 400],
  metadata: { filename: file.split('/').pop() },
  onError(e) {
    console.log(JSON.stringify({ error: String(e) }));
    process.exit(1);
  },
  onSuccess() {
    console.log(JSON.stringify({ url: upload.url, size }));
  },
});
upload.start();
