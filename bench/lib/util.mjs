// Shared pieces of bench/run: processes (tracked, own process groups, all
// stopped at exit), temp dirs, free ports, the daemon and its admin socket,
// /proc readings, statistics. Node 20, built-in modules only.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const YARD_BIN = process.env.YARD_BIN || path.join(ROOT, 'build/yard');
export const MOCK_BIN = process.env.MOCK_ENGINE_BIN || path.join(ROOT, 'build/mock-engine');
export const HELPER_DIR = process.env.BENCH_HELPER_DIR || path.join(ROOT, 'build/bench');
export const MARKER = process.env.BENCH_MARKER || `yard-bench-${process.pid}`;
const KEEP = process.env.BENCH_KEEP === '1';

/** CLOCK_MONOTONIC in ns (libuv's hrtime is CLOCK_MONOTONIC on Linux), as a Number. */
export const monoNs = () => Number(process.hrtime.bigint());

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function log(...args) {
    process.stderr.write(`bench: ${args.join(' ')}\n`);
}

// ---- temp dirs ----

const dirs = [];
/** A fresh directory under /tmp, removed at exit (kept with BENCH_KEEP=1). */
export function tmpdir(prefix = 'yard-bench-') {
    const d = fs.mkdtempSync(path.join('/tmp', prefix));
    dirs.push(d);
    return d;
}

// ---- processes ----

const procs = new Set();

/**
 * Starts cmd in its own process group with stdout and stderr appended to
 * logPath (or ignored), BENCH_MARKER in its environment. Returns
 * { pid, child, exited (a promise of {code, signal}), alive(), stop(ms) }.
 */
export function start(cmd, args, { env = {}, logPath = null, cwd = ROOT } = {}) {
    const fd = logPath ? fs.openSync(logPath, 'a') : 'ignore';
    const child = spawn(cmd, args, {
        cwd,
        env: { ...process.env, ...env, BENCH_MARKER: MARKER },
        stdio: ['ignore', fd, fd],
        detached: true,
    });
    if (typeof fd === 'number') fs.closeSync(fd);
    let done = false;
    const exited = new Promise((resolve) => {
        child.on('exit', (code, signal) => {
            done = true;
            procs.delete(p);
            resolve({ code, signal });
        });
        child.on('error', (err) => {
            done = true;
            procs.delete(p);
            resolve({ code: -1, signal: null, error: err });
        });
    });
    const p = {
        pid: child.pid,
        child,
        exited,
        logPath,
        alive: () => !done,
        async stop(ms = 5000) {
            if (done) return exited;
            signalGroup(child.pid, 'SIGTERM');
            const t = await Promise.race([exited, sleep(ms).then(() => null)]);
            if (!t) signalGroup(child.pid, 'SIGKILL');
            return exited;
        },
    };
    procs.add(p);
    return p;
}

function signalGroup(pid, sig) {
    try {
        process.kill(-pid, sig);
    } catch {
        try {
            process.kill(pid, sig);
        } catch {
            /* gone */
        }
    }
}

/** Runs cmd to completion; resolves { code, stdout, stderr }. */
export function run(cmd, args, { env = {}, timeoutMs = 600000, cwd = ROOT } = {}) {
    return new Promise((resolve, reject) => {
        const child = spawn(cmd, args, {
            cwd,
            env: { ...process.env, ...env, BENCH_MARKER: MARKER },
            stdio: ['ignore', 'pipe', 'pipe'],
            detached: true,
        });
        const p = { pid: child.pid, alive: () => true, stop: async () => signalGroup(child.pid, 'SIGKILL') };
        procs.add(p);
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => signalGroup(child.pid, 'SIGKILL'), timeoutMs);
        child.on('error', (e) => {
            clearTimeout(timer);
            procs.delete(p);
            reject(e);
        });
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            procs.delete(p);
            resolve({ code: code ?? -1, signal, stdout, stderr });
        });
    });
}

/** Stops everything still running (SIGTERM, then SIGKILL), synchronously. */
export function cleanupSync() {
    for (const p of procs) signalGroup(p.pid, 'SIGTERM');
    const until = Date.now() + 2000;
    while ([...procs].some((p) => pidAlive(p.pid)) && Date.now() < until) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
    for (const p of procs) signalGroup(p.pid, 'SIGKILL');
    procs.clear();
    if (!KEEP) for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}

/** Stops everything still running, gracefully. */
export async function cleanup() {
    await Promise.all([...procs].map((p) => p.stop(3000)));
    cleanupSync();
}

export function pidAlive(pid) {
    try {
        const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) !== 'Z';
    } catch {
        return false;
    }
}

// ---- network ----

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.unref();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

/** Several distinct free ports. */
export async function freePorts(n) {
    const seen = new Set();
    while (seen.size < n) seen.add(await freePort());
    return [...seen];
}

export function tcpAccepts(port) {
    return new Promise((resolve) => {
        const s = net.createConnection({ host: '127.0.0.1', port });
        s.on('connect', () => {
            s.destroy();
            resolve(true);
        });
        s.on('error', () => resolve(false));
    });
}

/** Polls fn until it returns something truthy; throws after timeoutMs. */
export async function waitFor(fn, { timeoutMs = 10000, intervalMs = 20, what = 'condition' } = {}) {
    const until = Date.now() + timeoutMs;
    let last;
    for (;;) {
        try {
            last = await fn();
            if (last) return last;
        } catch (e) {
            last = e;
        }
        if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
        await sleep(intervalMs);
    }
}

/**
 * One HTTP/1.1 request on a fresh connection, timed: resolves
 * { status, body, tSendNs, tFirstByteNs, tEndNs }. The body is read as
 * Content-Length says, or to EOF.
 */
export function timedRequest(port, method, reqPath, body, { timeoutMs = 120000 } = {}) {
    return new Promise((resolve, reject) => {
        const payload = body == null ? '' : typeof body === 'string' ? body : JSON.stringify(body);
        const head =
            `${method} ${reqPath} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n` +
            `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n\r\n`;
        const s = net.createConnection({ host: '127.0.0.1', port });
        s.setNoDelay(true);
        let tSendNs = 0;
        let tFirstByteNs = 0;
        const chunks = [];
        const timer = setTimeout(() => {
            s.destroy();
            reject(new Error(`${method} ${reqPath}: no answer in ${timeoutMs} ms`));
        }, timeoutMs);
        s.on('connect', () => {
            tSendNs = monoNs();
            s.write(head + payload);
        });
        s.on('data', (d) => {
            if (!tFirstByteNs) tFirstByteNs = monoNs();
            chunks.push(d);
        });
        s.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
        });
        s.on('close', () => {
            clearTimeout(timer);
            const text = Buffer.concat(chunks).toString('utf8');
            const m = /^HTTP\/1\.\d (\d+)/.exec(text);
            const i = text.indexOf('\r\n\r\n');
            resolve({
                status: m ? Number(m[1]) : 0,
                body: i >= 0 ? text.slice(i + 4) : '',
                tSendNs,
                tFirstByteNs,
                tEndNs: monoNs(),
            });
        });
    });
}

// ---- the daemon ----

/** A command line for build/mock-engine as a config's cmd. */
export const mockCmd = (flavor, extra = '') =>
    `${MOCK_BIN} --flavor ${flavor} --port \${PORT} --name \${NAME} ${extra}`.trim();

/**
 * Writes a config and starts `yard serve` on it in a fresh state dir.
 * models: { NAME: {...} } written as JSON (YAML flow style); top: more
 * top-level YAML. Resolves { dir, port, base, proc, config, stateDir }.
 */
export async function startYard({ models, top = '', router = {}, defaults = {}, listenTimeoutMs = 10000 }) {
    const dir = tmpdir('yb-');
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n${top}`;
    yaml += `defaults: ${JSON.stringify({ stop_timeout: '2s', startup_timeout: '60s', ttl: 0, ...defaults })}\n`;
    yaml += `router: ${JSON.stringify({ max_queue: 4096, max_wait: '120s', ...router })}\n`;
    yaml += 'models:\n';
    for (const [name, body] of Object.entries(models)) yaml += `  ${name}: ${JSON.stringify(body)}\n`;
    // The config in a directory of its own: yard watches the config's directory,
    // and the state and logs change all the time.
    fs.mkdirSync(path.join(dir, 'cfg'));
    const config = path.join(dir, 'cfg', 'yard.yaml');
    fs.writeFileSync(config, yaml);
    const stateDir = path.join(dir, 'state');
    const proc = start(YARD_BIN, ['serve', '-c', config, '--state-dir', stateDir], {
        logPath: path.join(dir, 'daemon.log'),
    });
    const sock = path.join(stateDir, 'yard.sock');
    await waitFor(
        async () => {
            if (!proc.alive()) throw new Error(`yard serve exited; see ${path.join(dir, 'daemon.log')}`);
            return fs.existsSync(sock) && (await tcpAccepts(port));
        },
        { timeoutMs: listenTimeoutMs, what: `yard listening on ${port}` }
    );
    return { dir, stateDir, port, base: `http://127.0.0.1:${port}`, proc, config };
}

/**
 * One request on STATE_DIR/yard.sock: resolves every answer line parsed, up
 * to the one carrying `ok`. Throws when that line says ok: false.
 */
export function admin(stateDir, req, { timeoutMs = 60000 } = {}) {
    return new Promise((resolve, reject) => {
        const s = net.createConnection(path.join(stateDir, 'yard.sock'));
        let buf = '';
        const lines = [];
        const timer = setTimeout(() => {
            s.destroy();
            reject(new Error(`admin ${JSON.stringify(req)}: no final answer in ${timeoutMs} ms`));
        }, timeoutMs);
        s.on('connect', () => s.write(JSON.stringify(req) + '\n'));
        s.on('data', (d) => {
            buf += d;
            let i;
            while ((i = buf.indexOf('\n')) >= 0) {
                const line = buf.slice(0, i);
                buf = buf.slice(i + 1);
                if (!line.trim()) continue;
                const o = JSON.parse(line);
                lines.push(o);
                if ('ok' in o) {
                    clearTimeout(timer);
                    s.end();
                    if (!o.ok) reject(new Error(`admin ${JSON.stringify(req)}: ${o.error}`));
                    else resolve(lines);
                }
            }
        });
        s.on('error', (e) => {
            clearTimeout(timer);
            reject(e);
        });
    });
}

/**
 * Follows the daemon's events: calls onEvent(event, arrivalNs) for each new
 * one. Returns { close() }.
 */
export function followEvents(stateDir, onEvent) {
    const s = net.createConnection(path.join(stateDir, 'yard.sock'));
    let buf = '';
    let live = false;
    s.on('connect', () => s.write(JSON.stringify({ cmd: 'events', n: 1, follow: true }) + '\n'));
    s.on('data', (d) => {
        const at = monoNs();
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            if (!line.trim()) continue;
            const o = JSON.parse(line);
            if (o.event && live) onEvent(o.event, at);
        }
        live = true; // the first batch is the backlog
    });
    s.on('error', () => {});
    return { close: () => s.destroy() };
}

export async function ps(stateDir) {
    const lines = await admin(stateDir, { cmd: 'ps' });
    return lines[lines.length - 1].result;
}

// ---- /proc ----

/** { rss, anon, file, hwm } of pid in KiB, from /proc/PID/status (null if gone). */
export function memKiB(pid) {
    try {
        const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
        const get = (k) => {
            const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st);
            return m ? Number(m[1]) : null;
        };
        return { rss: get('VmRSS'), anon: get('RssAnon'), file: get('RssFile'), hwm: get('VmHWM') };
    } catch {
        return null;
    }
}

/** CPU time (user + system) of pid in ms. */
export function cpuMs(pid) {
    try {
        const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
        const hz = 100; // USER_HZ on Linux
        return ((Number(f[11]) + Number(f[12])) * 1000) / hz;
    } catch {
        return null;
    }
}

/** CPU time (user + system) in ms of every process in process group pgid. */
export function groupCpuMs(pgid) {
    let ms = 0;
    for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        try {
            const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
            const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
            if (Number(f[2]) === pgid) ms += ((Number(f[11]) + Number(f[12])) * 1000) / 100;
        } catch {
            /* gone */
        }
    }
    return ms;
}

/** The pid of yard's engine for model (from ps), or null. */
export async function enginePid(stateDir, model) {
    const e = (await ps(stateDir)).find((x) => x.name === model);
    return e && e.pid ? e.pid : null;
}

// ---- statistics ----

export function percentile(values, p) {
    const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
    if (!v.length) return null;
    const i = Math.min(v.length - 1, Math.max(0, Math.round((p / 100) * (v.length - 1))));
    return v[i];
}

export const median = (values) => percentile(values, 50);

/** { median, min, max, n } of the finite values. */
export function summary(values) {
    const v = values.filter((x) => Number.isFinite(x));
    if (!v.length) return { median: null, min: null, max: null, n: 0 };
    return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length };
}

/** Rounds to d decimals (null stays null). */
export const round = (x, d = 1) => (x == null || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d);

/** Sets obj[key], obj[key_min], obj[key_max] from a summary, rounded. */
export function put(obj, key, s, d = 1) {
    obj[key] = round(s.median, d);
    obj[`${key}_min`] = round(s.min, d);
    obj[`${key}_max`] = round(s.max, d);
    return obj;
}

/** Rotates arr by i: the order in which targets run changes from round to round. */
export const rotate = (arr, i) => arr.map((_, k) => arr[(k + i) % arr.length]);

export const cpus = () => os.cpus().length;
