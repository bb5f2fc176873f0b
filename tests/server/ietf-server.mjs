// A server of the IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-
// resumable-upload), written for tusflow's tests from the draft's text: interop 8
// (the editor's copy) or 6 (drafts -04 and -05). No dependencies.
//
//   node ietf-server.mjs --dir DIR [--port 0] [--interop 8|6] [--max-size N]
//        [--min-size N] [--max-append-size N] [--min-append-size N] [--max-age S]
//        [--no-104] [--no-options] [--fail-processing] [--no-append-offset]
//        [--backtrack N]
//
// The target resource is /uploads; each upload resource is /uploads/<id>, its bytes in
// DIR/<id> and its state in DIR/<id>.json. It prints one JSON line when it listens:
// {"endpoint": "http://127.0.0.1:PORT/uploads", "port": PORT}.
//
// As the draft asks: a 104 (Upload Resumption Supported) with Location and
// Upload-Limit before a creation's content is read (only for a request with this
// interop version); appends at the resource's offset only (409 with the
// mismatching-upload-offset problem otherwise); as much of an interrupted request's
// content kept as arrived; a new request to a resource ends the one still running
// (the draft's recommended answer to concurrency); the length enforced; the completing
// request answered by the target resource (200 with a JSON body).

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const flag = (name) => args.includes(name);
const dir = opt('--dir');
if (!dir) {
  console.error('ietf-server: --dir DIR is required');
  process.exit(2);
}
const interop = Number(opt('--interop', '8'));
const num = (name) => (opt(name) === undefined ? undefined : Number(opt(name)));
const limits = {
  'max-size': num('--max-size'),
  'min-size': num('--min-size'),
  'max-append-size': num('--max-append-size'),
  'min-append-size': num('--min-append-size'),
  [interop === 6 ? 'expires' : 'max-age']: num('--max-age'),
};
const send104 = !flag('--no-104');
const problemBase = 'https://iana.org/assignments/http-problem-types#';
let origin = '';
// Locations name the host the client asked (a proxy in front stays in front).
const base = (req) => (req.headers.host ? `http://${req.headers.host}` : origin);

const uploads = new Map();

function limitHeader() {
  const parts = Object.entries(limits)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(', ') : undefined;
}

// A Structured Field Integer or Boolean, strictly (parameters ignored).
function sfInteger(v) {
  if (v === undefined) return undefined;
  const m = /^\s*(-?\d{1,15})(;[^,]*)?\s*$/.exec(v);
  return m ? Number(m[1]) : NaN;
}
function sfBoolean(v) {
  if (v === undefined) return undefined;
  const m = /^\s*\?([01])(;[^,]*)?\s*$/.exec(v);
  return m ? m[1] === '1' : null;
}

function save(st) {
  const { active, ...rest } = st;
  fs.writeFileSync(path.join(dir, `${st.id}.json`), JSON.stringify(rest));
}

function headers(res, st, extra = {}) {
  const h = { 'Upload-Draft-Interop-Version': String(interop), ...extra };
  const l = limitHeader();
  if (l) h['Upload-Limit'] = l;
  for (const [k, v] of Object.entries(h)) res.setHeader(k, v);
}

function problem(res, status, type, title, extra = {}, hdrs = {}) {
  const body = JSON.stringify({ type: problemBase + type, title, ...extra });
  res.writeHead(status, {
    'Content-Type': 'application/problem+json',
    'Content-Length': Buffer.byteLength(body),
    ...hdrs,
  });
  res.end(body);
}

function plain(res, status, text, hdrs = {}) {
  res.writeHead(status, { 'Content-Type': 'text/plain', ...hdrs });
  res.end(text);
}

// End the request still running on this resource (its bytes so far stay).
function takeOver(st) {
  if (st.active) {
    const { req } = st.active;
    st.active = null;
    req.socket.destroy();
  }
}

// Read the content of `req` into the resource, then answer.
// A Content-Digest (RFC 9530) of sha-256 or sha-512, when the request has one.
function contentDigest(req) {
  const v = req.headers['content-digest'];
  if (!v) return null;
  for (const part of v.split(',')) {
    const m = /^\s*(sha-256|sha-512)=:([A-Za-z0-9+/=]*):\s*$/.exec(part);
    if (m) return { algorithm: m[1] === 'sha-256' ? 'sha256' : 'sha512', expected: m[2] };
  }
  return null;
}

function receive(req, res, st, complete, creation) {
  const me = { req };
  st.active = me;
  // With a digest, the content is held until it is checked, and appended only then.
  const digest = contentDigest(req);
  const held = [];
  const fd = fs.openSync(path.join(dir, st.id), 'a');
  let closed = false;
  const close = () => {
    if (!closed) {
      closed = true;
      fs.closeSync(fd);
      save(st);
    }
  };
  req.on('data', (chunk) => {
    if (st.active !== me || st.invalid) return;
    if (st.length !== null && st.offset + chunk.length > st.length) {
      // More than the length: the resource is invalid from now on.
      st.invalid = true;
      st.active = null;
      close();
      problem(res, 400, 'inconsistent-upload-length', 'content beyond the upload length', {}, { Connection: 'close' });
      req.socket.destroySoon?.();
      return;
    }
    if (digest) {
      held.push(chunk);
      return;
    }
    fs.writeSync(fd, chunk);
    st.offset += chunk.length;
    st.hash.update(chunk);
  });
  req.on('end', () => {
    if (st.active !== me) return close();
    st.active = null;
    if (digest) {
      const content = Buffer.concat(held);
      const got = crypto.createHash(digest.algorithm).update(content).digest('base64');
      if (got !== digest.expected) {
        close();
        return plain(res, 400, 'Content-Digest does not match the content');
      }
      fs.writeSync(fd, content);
      st.offset += content.length;
      st.hash.update(content);
      st.digests = (st.digests ?? 0) + 1;
    }
    if (complete) {
      if (st.length !== null && st.length !== st.offset) {
        close();
        return problem(res, 400, 'inconsistent-upload-length', 'the content ended before the upload length');
      }
      st.length = st.offset;
      st.complete = true;
      st.sha256 = st.rehash
        ? crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, st.id))).digest('hex')
        : st.hash.copy().digest('hex');
      close();
      if (flag('--fail-processing')) {
        // Every byte is there; the target resource fails to process them.
        headers(res, st, { 'Upload-Complete': '?1' });
        return plain(res, 500, 'the representation could not be processed');
      }
      // The target resource's own answer, as if it had the whole representation.
      const body = JSON.stringify({
        id: st.id,
        size: st.offset,
        sha256: st.sha256,
        type: st.contentType,
        disposition: st.disposition,
      });
      headers(res, st, { 'Upload-Complete': '?1', 'Content-Type': 'application/json' });
      res.writeHead(200, { 'Content-Length': Buffer.byteLength(body) });
      return res.end(body);
    }
    close();
    // (Interop 8 requires only Upload-Complete in an append's answer.)
    const extra = { 'Upload-Complete': '?0' };
    if (creation || !flag('--no-append-offset')) extra['Upload-Offset'] = String(st.offset);
    if (creation) extra.Location = `${base(req)}/uploads/${st.id}`;
    headers(res, st, extra);
    res.writeHead(creation ? 201 : 204);
    res.end();
  });
  // --backtrack N: an interrupted request loses its last N bytes, and more (the
  // offset goes back, even before where the request began), as the draft lets a
  // server's offset be less than what the client sent.
  const interrupted = () => {
    const back = num('--backtrack');
    if (!closed && !req.complete && back && st.active === me) {
      st.active = null;
      st.offset = Math.max(0, st.offset - back);
      fs.ftruncateSync(fd, st.offset);
      st.rehash = true;
      st.backtracked = (st.backtracked ?? 0) + 1;
    }
    close();
  };
  req.on('close', interrupted);
  req.on('error', interrupted);
}

function create(req, res) {
  const complete = sfBoolean(req.headers['upload-complete']);
  const version = sfInteger(req.headers['upload-draft-interop-version']);
  const contentLength = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
  if (complete === undefined || version !== interop) {
    // Not a resumable upload of this version: a conventional one, no 104.
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => plain(res, 200, `stored ${Buffer.concat(chunks).length} bytes, not resumable`));
    return;
  }
  if (complete === null) return plain(res, 400, 'Upload-Complete is not a Boolean');
  let length = sfInteger(req.headers['upload-length']);
  if (Number.isNaN(length) || length < 0) return plain(res, 400, 'Upload-Length is not a non-negative Integer');
  if (complete && contentLength !== undefined) {
    if (length !== undefined && length !== contentLength) {
      return problem(res, 400, 'inconsistent-upload-length', 'inconsistent length values for upload');
    }
    length = contentLength;
  }
  const lim = limitHeader();
  if (length !== undefined && limits['max-size'] !== undefined && length > limits['max-size']) {
    return plain(res, 413, 'the upload is larger than max-size', lim ? { 'Upload-Limit': lim } : {});
  }
  if (length !== undefined && limits['min-size'] !== undefined && length < limits['min-size']) {
    return plain(res, 400, 'the upload is smaller than min-size', lim ? { 'Upload-Limit': lim } : {});
  }
  if (contentLength !== undefined && limits['max-append-size'] !== undefined && contentLength > limits['max-append-size']) {
    return plain(res, 413, 'the content is larger than max-append-size', lim ? { 'Upload-Limit': lim } : {});
  }
  const id = crypto.randomBytes(12).toString('hex');
  const st = {
    id,
    offset: 0,
    length: length === undefined ? null : length,
    complete: false,
    invalid: false,
    interop,
    contentType: req.headers['content-type'] ?? null,
    disposition: req.headers['content-disposition'] ?? null,
    active: null,
    hash: crypto.createHash('sha256'),
  };
  Object.defineProperty(st, 'hash', { enumerable: false, value: st.hash, writable: true });
  uploads.set(id, st);
  fs.writeFileSync(path.join(dir, id), '');
  save(st);
  if (send104) {
    const h = [`HTTP/1.1 104 Upload Resumption Supported`, `Location: ${base(req)}/uploads/${id}`, `Upload-Draft-Interop-Version: ${interop}`];
    if (lim) h.push(`Upload-Limit: ${lim}`);
    res._writeRaw(h.join('\r\n') + '\r\n\r\n', 'latin1');
  }
  receive(req, res, st, complete, true);
}

function onResource(req, res, id) {
  const st = uploads.get(id);
  if (!st) return plain(res, 404, 'no such upload');
  if (sfInteger(req.headers['upload-draft-interop-version']) !== interop) {
    return plain(res, 400, `this server speaks interop version ${interop}`);
  }
  if (req.method === 'DELETE') {
    takeOver(st);
    uploads.delete(id);
    fs.rmSync(path.join(dir, id), { force: true });
    fs.rmSync(path.join(dir, `${id}.json`), { force: true });
    res.writeHead(204);
    return res.end();
  }
  if (req.method === 'HEAD') {
    takeOver(st);
    if (st.invalid) return plain(res, 410, 'the upload is invalid');
    const extra = {
      'Upload-Offset': String(st.offset),
      'Upload-Complete': st.complete ? '?1' : '?0',
      'Cache-Control': 'no-store',
    };
    if (st.length !== null) extra['Upload-Length'] = String(st.length);
    headers(res, st, extra);
    res.writeHead(204);
    return res.end();
  }
  if (req.method !== 'PATCH') return plain(res, 405, 'HEAD, PATCH or DELETE', { Allow: 'HEAD, PATCH, DELETE' });
  const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (ct !== 'application/partial-upload') return plain(res, 415, 'appends are application/partial-upload');
  const complete = sfBoolean(req.headers['upload-complete']);
  if (complete === undefined || complete === null) return plain(res, 400, 'Upload-Complete is required, a Boolean');
  const offset = sfInteger(req.headers['upload-offset']);
  if (offset === undefined || Number.isNaN(offset) || offset < 0) return plain(res, 400, 'Upload-Offset is required, a non-negative Integer');
  const contentLength = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
  takeOver(st);
  if (st.invalid) return plain(res, 410, 'the upload is invalid');
  if (st.complete) {
    if (contentLength) return problem(res, 400, 'inconsistent-upload-length', 'the upload is complete');
    return problem(res, 400, 'completed-upload', 'upload is already completed');
  }
  if (offset !== st.offset) {
    return problem(
      res, 409, 'mismatching-upload-offset', 'offset from request does not match offset of resource',
      { 'expected-offset': st.offset, 'provided-offset': offset },
      { 'Upload-Offset': String(st.offset), 'Upload-Complete': '?0' },
    );
  }
  let length = sfInteger(req.headers['upload-length']);
  if (Number.isNaN(length)) return plain(res, 400, 'Upload-Length is not an Integer');
  if (complete && contentLength !== undefined) {
    if (length !== undefined && length !== offset + contentLength) {
      return problem(res, 400, 'inconsistent-upload-length', 'inconsistent length values for upload');
    }
    length = offset + contentLength;
  }
  if (length !== undefined) {
    if (st.length !== null && st.length !== length) {
      return problem(res, 400, 'inconsistent-upload-length', 'the length differs from an earlier one');
    }
    st.length = length;
  }
  const lim = limitHeader();
  if (contentLength !== undefined && limits['max-append-size'] !== undefined && contentLength > limits['max-append-size']) {
    return plain(res, 413, 'the content is larger than max-append-size', lim ? { 'Upload-Limit': lim } : {});
  }
  if (!complete && contentLength !== undefined && limits['min-append-size'] !== undefined && contentLength < limits['min-append-size']) {
    return plain(res, 400, 'the content is smaller than min-append-size');
  }
  receive(req, res, st, complete, false);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const p = url.pathname.replace(/\/+$/, '');
  if (p === '/uploads') {
    if (req.method === 'OPTIONS') {
      if (flag('--no-options')) return plain(res, 405, 'no OPTIONS here');
      headers(res, null, { 'Accept-Patch': 'application/partial-upload' });
      res.writeHead(204);
      return res.end();
    }
    if (req.method === 'POST') return create(req, res);
    return plain(res, 405, 'POST here', { Allow: 'POST, OPTIONS' });
  }
  const m = /^\/uploads\/([0-9a-f]+)$/.exec(p);
  if (m) return onResource(req, res, m[1]);
  plain(res, 404, 'not found');
});
server.keepAliveTimeout = 60000;
server.listen(Number(opt('--port', '0')), '127.0.0.1', () => {
  const { port } = server.address();
  origin = `http://127.0.0.1:${port}`;
  console.log(JSON.stringify({ endpoint: `${origin}/uploads`, port }));
});
process.on('SIGTERM', () => process.exit(0));
