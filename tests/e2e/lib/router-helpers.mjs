// Helpers for the router's end-to-end tests (router, swap, clients, http-limits):
// a daemon from a few lines of config, the OpenAI error shape, SSE streams read as
// they come, Prometheus text, raw HTTP/1.1 over a plain socket, the event log, and
// streaming clients that stop reading.
// Node 20 built-ins only; the harness does process tracking and cleanup.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
    assert,
    MOCK_ENGINE_BIN,
    tmpdir,
    writeConfig,
    startDaemon,
    freePort,
    yard,
    parseSSE,
    waitFor,
    httpGet,
} from './harness.mjs';

// ---------------------------------------------------------------- config and daemon

/** The mock engine's command line for a model's `cmd`, served under the model's name. */
export const mockCmd = (flavor, extra = '') =>
    `${MOCK_ENGINE_BIN} --flavor ${flavor} --port \${PORT} --name \${NAME} ${extra}`.trim();

/**
 * Writes a config and starts `yard serve` on it, in a fresh state dir, on a free
 * listen port, with a random start_port (engines get ports from there).
 *   models:   { NAME: { engine, cmd, aliases, ttl, concurrency, ... } }
 *   groups:   { NAME: { exclusive, members } }
 *   router:   { max_queue, max_wait, max_loaded, max_body, header_timeout, ... }
 *   apiKeys:  [ 'sk-...' ]
 *   defaults: merged over { stop_timeout: 2s, startup_timeout: 30s }
 * Values are written as JSON, which YAML reads as flow style.
 * Returns { dir, port, base (http://127.0.0.1:PORT), d (the daemon), config }.
 */
export async function routerDaemon({ models = {}, groups, router, apiKeys, defaults, top = '', dir = tmpdir(), env } = {}) {
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n${top}`;
    yaml += `defaults: ${JSON.stringify({ stop_timeout: '2s', startup_timeout: '30s', ...defaults })}\n`;
    if (apiKeys) yaml += `api_keys: ${JSON.stringify(apiKeys)}\n`;
    if (router) yaml += `router: ${JSON.stringify(router)}\n`;
    yaml += 'models:\n';
    for (const [name, body] of Object.entries(models)) yaml += `  ${name}: ${JSON.stringify(body)}\n`;
    if (groups) {
        yaml += 'groups:\n';
        for (const [name, body] of Object.entries(groups)) yaml += `  ${name}: ${JSON.stringify(body)}\n`;
    }
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir, env });
    const base = `http://127.0.0.1:${port}`;
    // `yard serve` may open its admin socket a moment before its HTTP listener.
    await waitFor(() => tcpAccepts(port), { timeoutMs: 5000, what: `yard listening on ${base}` });
    return { dir, port, base, d, config };
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function tcpAccepts(port) {
    return new Promise((resolve) => {
        const s = net.createConnection({ host: '127.0.0.1', port });
        s.once('connect', () => {
            s.destroy();
            resolve(true);
        });
        s.once('error', () => resolve(false));
    });
}

// ---------------------------------------------------------------- request bodies

export const chatBody = (model, { stream = false, max_tokens = 4, content = 'hi', ...rest } = {}) => ({
    model,
    stream,
    max_tokens,
    messages: [{ role: 'user', content }],
    ...rest,
});

/** What the mock engine generates for n tokens: "tok0 tok1 ... tok{n-1} ". */
export const mockText = (n) => Array.from({ length: n }, (_, i) => `tok${i} `).join('');

/** The assistant text of a chat stream's frames (OpenAI chunk format). */
export function chatStreamText(events) {
    let text = '';
    for (const e of events) {
        if (e.data === '[DONE]') continue;
        let o;
        try {
            o = JSON.parse(e.data);
        } catch {
            continue;
        }
        text += o.choices?.[0]?.delta?.content ?? '';
    }
    return text;
}

// ---------------------------------------------------------------- errors

/**
 * Asserts OpenAI's error shape {"error":{"message","type","param","code"}} (all
 * four keys present; message a non-empty string; type a string; param and code
 * strings or null, never a number) and returns the inner error object.
 */
export function assertOpenAIError(body, what = 'error body') {
    let o;
    try {
        o = typeof body === 'string' ? JSON.parse(body) : body;
    } catch {
        assert.fail(`${what} is not JSON: ${body}`);
    }
    assert.ok(o && typeof o.error === 'object' && o.error !== null, `${what} has no error object: ${body}`);
    const e = o.error;
    for (const k of ['message', 'type', 'param', 'code']) {
        assert.ok(k in e, `${what}: error.${k} missing: ${JSON.stringify(o)}`);
    }
    assert.equal(typeof e.message, 'string', `${what}: message not a string: ${JSON.stringify(o)}`);
    assert.ok(e.message.length > 0, `${what}: empty message`);
    assert.equal(typeof e.type, 'string', `${what}: type not a string: ${JSON.stringify(o)}`);
    assert.ok(e.param === null || typeof e.param === 'string', `${what}: param ${JSON.stringify(e.param)}`);
    assert.ok(
        e.code === null || typeof e.code === 'string',
        `${what}: code must be a string or null, got ${JSON.stringify(e.code)}`
    );
    return e;
}

// ---------------------------------------------------------------- streams

/**
 * Starts a request (no keep-alive) and reads the response as it comes.
 * Resolves at the response head with:
 *   status, headers
 *   text()            everything received so far
 *   events()          parseSSE(text())
 *   waitFor(pred, ms) until pred(text, events) is truthy (rejects at the end of
 *                     the stream or after ms)
 *   done              a promise: { text, complete } once the response ended
 *                     (complete: the message ended properly) or the socket closed
 *   abort()           destroys the socket (a client that goes away)
 */
export function openStream(url, body, { method = 'POST', headers = {} } = {}) {
    return new Promise((resolve, reject) => {
        const h = { ...headers };
        let payload;
        if (body !== undefined && body !== null) {
            payload = typeof body === 'string' ? body : JSON.stringify(body);
            if (typeof body !== 'string') h['content-type'] ??= 'application/json';
            h['content-length'] = Buffer.byteLength(payload);
        }
        const req = http.request(url, { method, headers: h, agent: false }, (res) => {
            res.setEncoding('utf8');
            let text = '';
            let finished = null;
            const watchers = new Set();
            const notify = () => {
                for (const w of [...watchers]) w();
            };
            let doneResolve;
            const done = new Promise((r) => (doneResolve = r));
            const finish = () => {
                if (finished) return;
                finished = { text, complete: res.complete };
                doneResolve(finished);
                notify();
            };
            res.on('data', (c) => {
                text += c;
                notify();
            });
            res.on('end', finish);
            res.on('close', finish);
            res.on('error', finish);
            resolve({
                status: res.statusCode,
                headers: res.headers,
                text: () => text,
                events: () => parseSSE(text),
                done,
                waitFor(pred, timeoutMs = 10000) {
                    return new Promise((ok, fail) => {
                        const check = () => {
                            let v;
                            try {
                                v = pred(text, parseSSE(text));
                            } catch {
                                v = undefined; // not parseable yet: wait for more
                            }
                            if (v) {
                                cleanup();
                                ok(v);
                            } else if (finished) {
                                cleanup();
                                fail(new Error(`${url}: stream ended before the condition; got:\n${text}`));
                            }
                        };
                        const t = setTimeout(() => {
                            cleanup();
                            fail(new Error(`${url}: condition not met after ${timeoutMs} ms; got:\n${text}`));
                        }, timeoutMs);
                        const cleanup = () => {
                            clearTimeout(t);
                            watchers.delete(check);
                        };
                        watchers.add(check);
                        check();
                    });
                },
                abort: () => {
                    req.destroy();
                    res.destroy();
                },
            });
        });
        req.on('error', reject);
        req.end(payload);
    });
}

/** Reads a whole stream with a deadline: { status, headers, text, complete, events }. */
export async function readStream(url, body, { timeoutMs = 30000, ...opts } = {}) {
    const s = await openStream(url, body, opts);
    let timer;
    const timeout = new Promise((_, rej) => {
        timer = setTimeout(() => {
            s.abort();
            rej(new Error(`${url}: stream not finished after ${timeoutMs} ms; got:\n${s.text()}`));
        }, timeoutMs);
    });
    const r = await Promise.race([s.done, timeout]);
    clearTimeout(timer);
    return { status: s.status, headers: s.headers, text: r.text, complete: r.complete, events: parseSSE(r.text) };
}

// ---------------------------------------------------------------- Prometheus text

/** Samples of a Prometheus text exposition: [{ name, labels: {k: v}, value }]. */
export function parseMetrics(text) {
    const out = [];
    for (const raw of text.split('\n')) {
        const line = raw.trim();
        if (!line || line.startsWith('#')) continue;
        const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$/);
        if (!m) continue;
        const labels = {};
        if (m[3]) {
            const re = /([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;
            let lm;
            while ((lm = re.exec(m[3]))) {
                labels[lm[1]] = lm[2].replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
            }
        }
        out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
}

/** Samples named `name` whose labels include every pair of `match`. */
export function samples(all, name, match = {}) {
    return all.filter(
        (s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === String(v))
    );
}

/** Sum of the values of samples(all, name, match); null when there is none. */
export function sampleSum(all, name, match = {}) {
    const s = samples(all, name, match);
    return s.length ? s.reduce((a, x) => a + x.value, 0) : null;
}

// ---------------------------------------------------------------- raw HTTP/1.1

/**
 * Parses as many complete HTTP/1.1 responses as `buf` holds, including interim
 * 1xx responses. Returns { responses: [{status, reason, headers, body, raw}], rest }.
 * A response without Content-Length or chunked framing (other than 1xx, 204,
 * 304) runs to the close: it is only returned when `closed` is true.
 */
export function parseResponses(buf, { closed = false } = {}) {
    const responses = [];
    let pos = 0;
    for (;;) {
        const headEnd = buf.indexOf('\r\n\r\n', pos);
        if (headEnd < 0) break;
        const head = buf.subarray(pos, headEnd).toString('latin1');
        const lines = head.split('\r\n');
        const sm = lines[0].match(/^HTTP\/(\d)\.(\d) (\d{3})(?: (.*))?$/);
        if (!sm) throw new Error(`not an HTTP status line: ${JSON.stringify(lines[0])}`);
        const status = Number(sm[3]);
        const headers = {};
        for (const l of lines.slice(1)) {
            const i = l.indexOf(':');
            if (i < 0) continue;
            const k = l.slice(0, i).trim().toLowerCase();
            const v = l.slice(i + 1).trim();
            headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
        }
        let p = headEnd + 4;
        let body;
        if ((status >= 100 && status < 200) || status === 204 || status === 304) {
            body = Buffer.alloc(0);
        } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
            const parts = [];
            let ok = false;
            for (;;) {
                const le = buf.indexOf('\r\n', p);
                if (le < 0) break;
                const size = parseInt(buf.subarray(p, le).toString('latin1').split(';')[0], 16);
                if (Number.isNaN(size)) throw new Error('bad chunk size');
                if (size === 0) {
                    // trailers end with an empty line
                    const te = buf.indexOf('\r\n\r\n', le);
                    const direct = buf.subarray(le, le + 4).toString('latin1') === '\r\n\r\n';
                    if (direct) {
                        p = le + 4;
                        ok = true;
                    } else if (te >= 0) {
                        p = te + 4;
                        ok = true;
                    }
                    break;
                }
                if (buf.length < le + 2 + size + 2) break;
                parts.push(buf.subarray(le + 2, le + 2 + size));
                p = le + 2 + size + 2;
            }
            if (!ok) break;
            body = Buffer.concat(parts);
        } else if ('content-length' in headers) {
            const n = Number(headers['content-length']);
            if (buf.length < p + n) break;
            body = buf.subarray(p, p + n);
            p += n;
        } else {
            if (!closed) break;
            body = buf.subarray(p);
            p = buf.length;
        }
        responses.push({
            status,
            reason: sm[4] || '',
            headers,
            body: body.toString('utf8'),
            raw: buf.subarray(pos, p),
        });
        pos = p;
    }
    return { responses, rest: buf.subarray(pos) };
}

const shown = (buf) => JSON.stringify(buf.toString('latin1').slice(0, 2000));

/**
 * A plain TCP connection for HTTP tests that need control over the bytes:
 *   send(data)                 writes (errors such as EPIPE are recorded, not thrown)
 *   responses(n, ms)           waits until n complete responses (1xx included) arrived
 *   received()                 all bytes so far (a Buffer)
 *   waitData(pred, ms)         until pred(received buffer) is truthy
 *   waitClose(ms)              until the server closed the connection; resolves true,
 *                              or false after ms
 *   closed, error              state
 *   destroy()
 */
export function rawConnect(port, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
        const s = net.createConnection({ host, port });
        let data = Buffer.alloc(0);
        const watchers = new Set();
        const notify = () => {
            for (const w of [...watchers]) w();
        };
        const conn = {
            socket: s,
            closed: false,
            error: null,
            closedAt: null,
            send(chunk) {
                if (conn.closed || s.destroyed) return false;
                return s.write(chunk);
            },
            received: () => data,
            waitData(pred, timeoutMs = 10000, what = 'data') {
                return new Promise((ok, fail) => {
                    const check = () => {
                        let v;
                        try {
                            v = pred(data);
                        } catch (err) {
                            cleanup();
                            fail(err);
                            return;
                        }
                        if (v) {
                            cleanup();
                            ok(v);
                        } else if (conn.closed) {
                            cleanup();
                            fail(
                                new Error(
                                    `connection closed before ${what}; received ${shown(data)}`
                                )
                            );
                        }
                    };
                    const t = setTimeout(() => {
                        cleanup();
                        fail(
                            new Error(
                                `no ${what} after ${timeoutMs} ms; received ${shown(data)}`
                            )
                        );
                    }, timeoutMs);
                    const cleanup = () => {
                        clearTimeout(t);
                        watchers.delete(check);
                    };
                    watchers.add(check);
                    check();
                });
            },
            async responses(n, timeoutMs = 10000) {
                return conn.waitData(
                    (buf) => {
                        const r = parseResponses(buf, { closed: conn.closed });
                        return r.responses.length >= n ? r.responses : null;
                    },
                    timeoutMs,
                    `${n} response(s)`
                );
            },
            waitClose(timeoutMs = 10000) {
                if (conn.closed) return Promise.resolve(true);
                return new Promise((ok) => {
                    const t = setTimeout(() => {
                        watchers.delete(check);
                        ok(false);
                    }, timeoutMs);
                    const check = () => {
                        if (conn.closed) {
                            clearTimeout(t);
                            watchers.delete(check);
                            ok(true);
                        }
                    };
                    watchers.add(check);
                });
            },
            destroy: () => s.destroy(),
        };
        s.on('data', (c) => {
            data = Buffer.concat([data, c]);
            notify();
        });
        s.on('error', (err) => {
            conn.error = err;
        });
        s.on('close', () => {
            conn.closed = true;
            conn.closedAt = Date.now();
            notify();
        });
        let connected = false;
        s.once('connect', () => {
            connected = true;
            resolve(conn);
        });
        s.once('error', (err) => {
            if (!connected) reject(err);
        });
    });
}

// ---------------------------------------------------------------- the daemon's records

/** `yard events --json -n N` as an array of event objects (id, ts_ms, model, from, to, reason). */
export async function events(dir, { model, n = 10000 } = {}) {
    const args = ['events', '--json', '-n', String(n)];
    if (model) args.push(model);
    const r = await yard(args, { stateDir: dir });
    if (r.code !== 0) throw new Error(`yard events exited ${r.code}: ${r.stderr}`);
    return r.stdout
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l));
}

/** `yard logs MODEL -n N` stdout (the engine's log). */
export async function engineLog(dir, model, n = 500) {
    const r = await yard(['logs', model, '-n', String(n)], { stateDir: dir });
    if (r.code !== 0) throw new Error(`yard logs ${model} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
}

/** Runs `yard ARGS` and asserts exit 0; returns stdout. */
export async function yardOk(dir, args) {
    const r = await yard(args, { stateDir: dir });
    assert.equal(r.code, 0, `yard ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
}

// ---------------------------------------------------------------- /metrics

/**
 * The Prometheus series yard exposes at GET /metrics, by name and labels. The
 * router, swap and http-limits tests read these; one place to keep them in step
 * with src/router.
 */
export const METRICS = {
    // counter {model, status}: requests answered, by model and HTTP status ("200", "503", ...)
    requests: 'yard_requests_total',
    // gauge {model}: requests waiting in the model's queue (not yet forwarded); every
    // configured model has a sample, 0 when idle
    queueDepth: 'yard_queue_depth',
    // summary or histogram (labels optional): seconds requests waited for their model
    // to be ready; the tests read its _count
    loadWait: 'yard_load_wait_seconds',
    // counter (labels optional): a model stopped or put to sleep to make room for another
    swaps: 'yard_swaps_total',
    // gauge {model, state}: 1 for the instance's current state (stopped, starting, ready,
    // sleeping, stopping, failed), 0 or absent for the others
    instanceState: 'yard_instance_state',
};

/** GET BASE/metrics parsed: { status, headers, text, all (samples) }. */
export async function getMetrics(base, headers = {}) {
    const r = await httpGet(`${base}/metrics`, { headers });
    return { status: r.status, headers: r.headers, text: r.body, all: parseMetrics(r.body) };
}

/** Sends head (a string or Buffer) on a fresh connection; resolves the one response, parsed. */
export async function rawOne(port, head) {
    const c = await rawConnect(port);
    try {
        c.send(head);
        const [r] = await c.responses(1, 10000);
        return r;
    } finally {
        c.destroy();
    }
}

/** The bytes of one HTTP/1.1 request; a non-string body is sent as JSON. */
export function rawRequest(method, target, body, headers = {}) {
    let payload = '';
    const h = { host: '127.0.0.1', ...headers };
    if (body !== undefined && body !== null) {
        payload = typeof body === 'string' ? body : JSON.stringify(body);
        if (typeof body !== 'string') h['content-type'] ??= 'application/json';
        h['content-length'] ??= Buffer.byteLength(payload);
    }
    let head = `${method} ${target} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(h)) head += `${k}: ${v}\r\n`;
    return `${head}\r\n${payload}`;
}

/** promise's value, or `onTimeout` after ms (the timer is cleared either way). */
export async function withTimeout(promise, ms, onTimeout = null) {
    let timer;
    const t = new Promise((resolve) => {
        timer = setTimeout(() => resolve(onTimeout), ms);
    });
    try {
        return await Promise.race([promise, t]);
    } finally {
        clearTimeout(timer);
    }
}

/**
 * The daemon's environment for a test that measures its RSS: under AddressSanitizer (the
 * sanitizer tier) freed memory waits in a quarantine that would count as growth; a daemon
 * built without it ignores this.
 */
export function noQuarantineEnv() {
    const prev = process.env.ASAN_OPTIONS;
    return { ASAN_OPTIONS: `${prev ? `${prev}:` : ''}quarantine_size_mb=0` };
}

/**
 * Starts n streaming clients that stop reading (tools/stall_clients.py: a
 * 4 KiB receive buffer and an Ethernet MSS each, so what yard cannot send
 * waits in yard, within a few hundred KiB of output whatever the machine's
 * speed): each POSTs body (a chat completion with stream: true) to
 * /v1/chat/completions, reads its first event and never reads again.
 * Resolves { n, failed, close() } once each has stalled; close() ends them.
 */
export function stallClients(dir, port, n, body) {
    const file = path.join(dir, 'stall-body.json');
    fs.writeFileSync(file, JSON.stringify(body));
    const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'tools', 'stall_clients.py');
    const child = spawn('python3', [script, String(port), String(n), file], {
        stdio: ['pipe', 'pipe', 'inherit'],
    });
    let out = '';
    const watchers = new Set();
    child.stdout.on('data', (c) => {
        out += c;
        for (const w of [...watchers]) w();
    });
    const line = (re, ms) =>
        new Promise((resolve, reject) => {
            const t = setTimeout(() => reject(new Error(`stall_clients.py: no '${re}' after ${ms} ms: ${out}`)), ms);
            const check = () => {
                const m = out.match(re);
                if (m) {
                    clearTimeout(t);
                    watchers.delete(check);
                    resolve(m);
                }
            };
            watchers.add(check);
            child.on('exit', check);
            check();
        });
    const kill = () => {
        try {
            process.kill(child.pid, 'SIGKILL');
        } catch {
            // already gone
        }
    };
    return line(/stalled (\d+) failed (\d+)/, 150000).then(
        (m) => ({
            n: Number(m[1]),
            failed: Number(m[2]),
            async close() {
                child.stdin.end('close\n');
                try {
                    await line(/closed/, 30000);
                } finally {
                    kill();
                }
            },
        }),
        (err) => {
            kill();
            throw err;
        }
    );
}
