// Helpers for Switchyard's end-to-end tests (node --test, Node 20, built-ins only).
//
// Every process a test starts through this file is tracked and cleaned up when the
// test file ends (node:test `after` hook) or the process exits: daemons get SIGTERM
// then SIGKILL, and any process whose environment or command line carries this run's
// marker (engines the daemon started, their children) is killed by process group.
// See docs/testing.md for the list of helpers.

import { after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../../..');

export const YARD_SRC_DIR = process.env.YARD_SRC_DIR || REPO;
export const YARD_BIN = process.env.YARD_BIN || path.join(REPO, 'build', 'yard');
export const MOCK_ENGINE_BIN =
    process.env.MOCK_ENGINE_BIN || path.join(REPO, 'build', 'mock-engine');

// Unique to this test process; put into the environment of everything spawned, so
// leftovers (engines started by a daemon, their forks) can be found and killed.
export const MARKER = `yard-e2e-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
const MARKER_ENV = `YARD_E2E_MARKER=${MARKER}`;

const tmpDirs = new Set();
const tracked = new Set(); // { pid, group, name, exited }
const daemons = new Set();
const KEEP = process.env.YARD_E2E_KEEP === '1';

// ---------------------------------------------------------------- small things

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Why the sessions' sandbox tests cannot run here, or false: they run as root (so
 *  that commands can run as nobody), and bwrap must be able to make its namespaces
 *  as that user. The value of node:test's `skip`. */
export function sandboxSkip() {
    if (process.getuid() !== 0) return 'runs as root, so that commands can run as nobody';
    const r = spawnSync('bwrap', ['--ro-bind', '/', '/', '--unshare-pid', '--unshare-net', 'true'], {
        uid: 65534,
        gid: 65534,
    });
    return r.status === 0 ? false : 'bwrap cannot make its namespaces here (no user namespaces?)';
}

/** Creates a fresh temporary directory, removed when the process exits
 *  (kept when YARD_E2E_KEEP=1). Short path: unix socket paths are limited. */
export function tmpdir(prefix = 'yard-') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    tmpDirs.add(dir);
    return dir;
}

/** A TCP port that was free a moment ago on 127.0.0.1 (bind 0, close). */
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/** Whether each of port .. port+n-1 can be bound on 127.0.0.1 now. */
async function portsFree(port, n) {
    const servers = [];
    let ok = true;
    for (let p = port; p < port + n && ok; p++) {
        ok = await new Promise((resolve) => {
            const srv = net.createServer();
            srv.unref();
            srv.once('error', () => resolve(false));
            srv.listen(p, '127.0.0.1', () => {
                servers.push(srv);
                resolve(true);
            });
        });
    }
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    return ok;
}

/** The first of n consecutive ports that are free now (a test that uses base, base+1, ...). */
export async function freePortRange(n) {
    for (let tries = 0; tries < 100; tries++) {
        const port = await freePort();
        if (port + n <= 65536 && (await portsFree(port, n))) return port;
    }
    throw new Error(`no ${n} consecutive free ports found on 127.0.0.1`);
}

/** Writes yamlText to DIR/yard.yaml (or DIR/name) and returns the file's path. */
export function writeConfig(dir, yamlText, name = 'yard.yaml') {
    const file = path.join(dir, name);
    fs.writeFileSync(file, yamlText);
    return file;
}

/** Polls `fn` (sync or async) until it returns a truthy value, which is returned.
 *  Errors thrown by fn count as "not yet", except one with `fatal: true` (see
 *  fatal()), which stops the wait at once. On timeout, throws with `what`, the last
 *  value and the last error. */
export async function waitFor(fn, { timeoutMs = 10000, intervalMs = 25, what = 'condition' } = {}) {
    const deadline = Date.now() + timeoutMs;
    let last;
    let lastErr;
    for (;;) {
        try {
            last = await fn();
            lastErr = undefined;
            if (last) return last;
        } catch (err) {
            if (err && err.fatal) throw err;
            lastErr = err;
        }
        if (Date.now() >= deadline) break;
        await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
    }
    let msg = `timed out after ${timeoutMs} ms waiting for ${what}`;
    if (last !== undefined) msg += `; last value: ${short(last)}`;
    if (lastErr) msg += `; last error: ${lastErr.message || lastErr}`;
    throw new Error(msg);
}

/** An Error that makes waitFor give up at once: throw fatal('engine exited'). */
export function fatal(message) {
    return Object.assign(new Error(message), { fatal: true });
}

function short(v) {
    let s;
    try {
        s = typeof v === 'string' ? v : JSON.stringify(v);
    } catch {
        s = String(v);
    }
    return s && s.length > 2000 ? `${s.slice(0, 2000)}...` : s;
}

// ---------------------------------------------------------------- /proc

function readStat(pid) {
    let text;
    try {
        text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
        return null;
    }
    // comm (field 2) may contain spaces and ')': parse after the last ')'.
    const rest = text.slice(text.lastIndexOf(')') + 2).trim().split(/\s+/);
    // rest[0] is field 3 (state); field N is rest[N - 3].
    return {
        state: rest[0],
        ppid: Number(rest[1]),
        pgid: Number(rest[2]),
        starttime: Number(rest[19]),
    };
}

function allPids() {
    return fs
        .readdirSync('/proc')
        .filter((e) => /^\d+$/.test(e))
        .map(Number);
}

/** True while pid exists and is not a zombie (exited but not reaped counts as gone). */
export function pidAlive(pid) {
    if (!pid) return false;
    try {
        process.kill(pid, 0);
    } catch (err) {
        if (err.code !== 'EPERM') return false;
    }
    const st = readStat(pid);
    return !!st && st.state !== 'Z' && st.state !== 'X';
}

/** /proc/PID/stat field 22 (start time in clock ticks since boot), or null. */
export function procStartTime(pid) {
    const st = readStat(pid);
    return st ? st.starttime : null;
}

/** Process group id of pid, or null when it is gone. */
export function pgidOf(pid) {
    const st = readStat(pid);
    return st ? st.pgid : null;
}

/** Pids whose parent is pid (live, zombies excluded). */
export function childrenOf(pid) {
    return allPids().filter((p) => {
        const st = readStat(p);
        return st && st.ppid === pid && st.state !== 'Z';
    });
}

/** Pids in process group pgid (live, zombies excluded). */
export function processesInGroup(pgid) {
    return allPids().filter((p) => {
        const st = readStat(p);
        return st && st.pgid === pgid && st.state !== 'Z';
    });
}

/** Command line of pid as an array, or null. */
export function cmdlineOf(pid) {
    try {
        const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        return raw.split('\0').filter((s) => s.length > 0);
    } catch {
        return null;
    }
}

/** Pids (not this process) whose environment or command line contains `needle`. */
export function processesMatching(needle) {
    const out = [];
    for (const p of allPids()) {
        if (p === process.pid) continue;
        let hit = false;
        for (const f of ['cmdline', 'environ']) {
            try {
                if (fs.readFileSync(`/proc/${p}/${f}`, 'latin1').includes(needle)) hit = true;
            } catch {
                // gone, or not ours
            }
            if (hit) break;
        }
        if (hit) {
            const st = readStat(p);
            if (st && st.state !== 'Z') out.push(p);
        }
    }
    return out;
}

// ---------------------------------------------------------------- processes

function childEnv(extra = {}) {
    return { ...process.env, YARD_E2E_MARKER: MARKER, ...extra };
}

function trackChild(child, name, group) {
    const rec = { pid: child.pid, group, name, exited: false, exit: null };
    rec.exitPromise = new Promise((resolve) => {
        child.on('exit', (code, signal) => {
            rec.exited = true;
            rec.exit = { code, signal };
            resolve(rec.exit);
        });
    });
    tracked.add(rec);
    return rec;
}

// A group record is signalled as long as its group has members, even after the
// leader exited (a fork that ignores SIGTERM stays behind in the group).
function signalRec(rec, sig) {
    try {
        if (rec.group) {
            if (!rec.exited || processesInGroup(rec.pid).length > 0) process.kill(-rec.pid, sig);
        } else if (!rec.exited) {
            process.kill(rec.pid, sig);
        }
    } catch {
        // already gone
    }
}

/** Waits for the leader's exit and, for a group, for the group to empty. */
async function waitGone(rec, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    const r = await waitRecExit(rec, timeoutMs);
    if (!r || !rec.group) return r;
    while (processesInGroup(rec.pid).length > 0) {
        if (Date.now() >= deadline) return null;
        await sleep(10);
    }
    return r;
}

async function waitRecExit(rec, timeoutMs) {
    if (rec.exited) return rec.exit;
    let timer;
    const timeout = new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), timeoutMs);
    });
    const r = await Promise.race([rec.exitPromise, timeout]);
    clearTimeout(timer);
    return r;
}

/**
 * Spawns a program in its own process group with this run's marker in its env;
 * stdout and stderr go to logPath (default: a file in a new tmpdir). Tracked for
 * cleanup. Returns { pid, pgid, logPath, child, kill(sig), waitExit(ms), stop(ms),
 * logText() }.
 */
export function startProcess(cmd, args = [], { env = {}, cwd, logPath, name } = {}) {
    if (!logPath) logPath = path.join(tmpdir('yard-proc-'), 'output.log');
    const fd = fs.openSync(logPath, 'a');
    let child;
    try {
        child = spawn(cmd, args, {
            cwd,
            env: childEnv(env),
            stdio: ['ignore', fd, fd],
            detached: true,
        });
    } finally {
        fs.closeSync(fd);
    }
    child.on('error', () => {}); // a failed spawn is reported below, by pid
    if (child.pid === undefined) {
        throw new Error(`cannot start '${cmd}': not found or not executable`);
    }
    const rec = trackChild(child, name || path.basename(cmd), true);
    return {
        pid: child.pid,
        pgid: child.pid,
        logPath,
        child,
        kill: (sig = 'SIGTERM') => signalRec(rec, sig),
        /** Resolves {code, signal}, or null on timeout. */
        waitExit: (timeoutMs = 10000) => waitRecExit(rec, timeoutMs),
        /** SIGTERM to the group; SIGKILL to it when the group has not emptied after
         *  timeoutMs. Resolves the leader's {code, signal, killed}. */
        stop: async (timeoutMs = 5000) => {
            signalRec(rec, 'SIGTERM');
            let r = await waitGone(rec, timeoutMs);
            if (r) return { ...r, killed: false };
            signalRec(rec, 'SIGKILL');
            r = await waitGone(rec, 5000);
            return r ? { ...r, killed: true } : null;
        },
        logText: () => readText(logPath),
        get exited() {
            return rec.exited;
        },
    };
}

/** Starts build/mock-engine: startMockEngine({flavor, port, name, loadTime, args}). */
export function startMockEngine({ flavor, port, name = 'mock', loadTime, args = [], env, logPath }) {
    const argv = ['--flavor', flavor, '--port', String(port), '--name', name];
    if (loadTime !== undefined) argv.push('--load-time', String(loadTime));
    return startProcess(MOCK_ENGINE_BIN, [...argv, ...args], {
        env,
        logPath,
        name: `mock-engine ${flavor}`,
    });
}

function readText(file) {
    try {
        return fs.readFileSync(file, 'utf8');
    } catch {
        return '';
    }
}

/** Sanitizer reports (ASan, LSan, UBSan) found in text, or null. */
export function sanitizerReport(text) {
    const m = text.match(
        /^.*(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer).*$/m
    );
    if (!m) return null;
    return text.slice(m.index, m.index + 4000);
}

// ---------------------------------------------------------------- the daemon

/** True when something accepts connections on the unix socket at sockPath. */
export function socketAccepts(sockPath) {
    return new Promise((resolve) => {
        const s = net.createConnection(sockPath);
        s.once('connect', () => {
            s.destroy();
            resolve(true);
        });
        s.once('error', () => resolve(false));
    });
}

/**
 * Starts `yard serve -c CONFIG --state-dir DIR [--listen ADDR] ARGS...` and waits
 * until DIR/yard.sock accepts connections. stderr goes to DIR/daemon.stderr.log,
 * stdout to DIR/daemon.stdout.log.
 *
 * Returns { pid, stateDir, config, listen, sock, kill(sig), waitExit(ms), stop(ms),
 * logText(), stdoutText() }. stop() sends SIGTERM, waits, SIGKILLs, and throws if
 * the daemon's log holds a sanitizer report.
 */
export async function startDaemon({
    config,
    stateDir,
    listen,
    args = [],
    env = {},
    readyTimeoutMs = 15000,
} = {}) {
    if (!stateDir) stateDir = tmpdir();
    fs.mkdirSync(stateDir, { recursive: true });
    const argv = ['serve'];
    if (config) argv.push('-c', config);
    argv.push('--state-dir', stateDir);
    if (listen) argv.push('--listen', listen);
    argv.push(...args);

    const errPath = path.join(stateDir, 'daemon.stderr.log');
    const outPath = path.join(stateDir, 'daemon.stdout.log');
    const errFd = fs.openSync(errPath, 'a');
    const outFd = fs.openSync(outPath, 'a');
    let child;
    try {
        child = spawn(YARD_BIN, argv, {
            env: childEnv(env),
            stdio: ['ignore', outFd, errFd],
            detached: true, // own group: a signal to the test runner does not reach it
        });
    } finally {
        fs.closeSync(errFd);
        fs.closeSync(outFd);
    }
    child.on('error', () => {}); // a failed spawn is reported below, by pid
    if (child.pid === undefined) throw new Error(`cannot start '${YARD_BIN}': not found`);
    const rec = trackChild(child, 'yard serve', false);
    const sock = path.join(stateDir, 'yard.sock');

    const d = {
        pid: child.pid,
        child,
        stateDir,
        config,
        listen,
        sock,
        logPath: errPath,
        kill: (sig = 'SIGTERM') => signalRec(rec, sig),
        waitExit: (timeoutMs = 10000) => waitRecExit(rec, timeoutMs),
        logText: () => readText(errPath),
        stdoutText: () => readText(outPath),
        get exited() {
            return rec.exited;
        },
        get exit() {
            return rec.exit;
        },
        async stop(timeoutMs = 15000) {
            signalRec(rec, 'SIGTERM');
            let r = await waitRecExit(rec, timeoutMs);
            if (!r) {
                signalRec(rec, 'SIGKILL');
                r = await waitRecExit(rec, 5000);
                throw new Error(
                    `yard serve (pid ${d.pid}) ignored SIGTERM for ${timeoutMs} ms\n` + tail(d.logText())
                );
            }
            daemons.delete(d);
            const rep = sanitizerReport(d.logText());
            if (rep) throw new Error(`sanitizer report in yard serve's log:\n${rep}`);
            return r;
        },
    };
    daemons.add(d);

    await waitFor(
        async () => {
            if (rec.exited) throw fatal('exited');
            return socketAccepts(sock);
        },
        { timeoutMs: readyTimeoutMs, intervalMs: 10, what: `${sock} to accept connections` }
    ).catch((err) => {
        const why = rec.exited
            ? `exited (code ${rec.exit.code}, signal ${rec.exit.signal}) before ${sock} accepted connections`
            : err.message;
        throw new Error(`yard serve ${why}\n--- ${errPath} ---\n${tail(d.logText())}`);
    });
    return d;
}

function tail(text, n = 40) {
    const lines = text.split('\n');
    return lines.slice(-n).join('\n');
}

// ---------------------------------------------------------------- the CLI

function cliEnv(stateDir, env) {
    const e = childEnv(env);
    if (stateDir) e.YARD_STATE_DIR = stateDir;
    return e;
}

/** Runs `yard ARGS...` and resolves {code, signal, stdout, stderr}. The daemon is
 *  found through YARD_STATE_DIR=stateDir. Kills it after timeoutMs (code null). */
export function yard(args, { stateDir, env, input, timeoutMs = 60000 } = {}) {
    return new Promise((resolve, reject) => {
        const child = spawn(YARD_BIN, args, {
            env: cliEnv(stateDir, env),
            stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
        child.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        child.on('error', (err) => {
            clearTimeout(timer);
            reject(new Error(`cannot run '${YARD_BIN}': ${err.message}`));
        });
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            resolve({ code, signal, stdout, stderr });
        });
        child.stdin.on('error', () => {});
        child.stdin.end(input ?? '');
    });
}

/** Synchronous yard(): returns {code, signal, stdout, stderr}. */
export function yardSync(args, { stateDir, env, input, timeoutMs = 60000 } = {}) {
    const r = spawnSync(YARD_BIN, args, {
        env: cliEnv(stateDir, env),
        input: input ?? '',
        encoding: 'utf8',
        timeout: timeoutMs,
    });
    if (r.error && r.error.code !== 'ETIMEDOUT') {
        throw new Error(`cannot run '${YARD_BIN}': ${r.error.message}`);
    }
    return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Runs yard ARGS... and returns its stdout parsed as JSON; throws (with stderr)
 *  when it exits nonzero or prints something else. */
export async function yardJson(args, opts = {}) {
    const r = await yard(args, opts);
    if (r.code !== 0) {
        throw new Error(`yard ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    }
    try {
        return JSON.parse(r.stdout);
    } catch (err) {
        throw new Error(`yard ${args.join(' ')} printed no JSON: ${err.message}\n${r.stdout}`);
    }
}

/** `yard ps --json` as an array. */
export function ps(stateDir) {
    return yardJson(['ps', '--json'], { stateDir });
}

/** Waits until `yard ps --json` shows model in state (a string or array of states);
 *  returns the ps entry. */
export async function waitState(stateDir, model, state, timeoutMs = 15000) {
    const want = Array.isArray(state) ? state : [state];
    let lastEntry;
    try {
        return await waitFor(
            async () => {
                const list = await ps(stateDir);
                lastEntry = list.find((e) => e.name === model);
                return lastEntry && want.includes(lastEntry.state) ? lastEntry : false;
            },
            { timeoutMs, intervalMs: 25, what: `'${model}' to be ${want.join(' or ')}` }
        );
    } catch (err) {
        throw new Error(`${err.message}; last ps entry: ${short(lastEntry)}`);
    }
}

// ---------------------------------------------------------------- admin socket

/**
 * Sends one request object to STATE_DIR/yard.sock (docs/admin.md) and resolves the
 * array of answer lines, parsed. Reading stops at the first line with an `ok` key,
 * when until(line, lines) returns true (for follow requests), or when the daemon
 * closes the connection; rejects after timeoutMs.
 */
export function admin(stateDir, request, { timeoutMs = 15000, until } = {}) {
    const sock = path.join(stateDir, 'yard.sock');
    return new Promise((resolve, reject) => {
        const lines = [];
        let buf = '';
        let done = false;
        const s = net.createConnection(sock);
        const finish = (err) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            s.destroy();
            if (err) reject(err);
            else resolve(lines);
        };
        const timer = setTimeout(
            () =>
                finish(
                    new Error(
                        `admin ${JSON.stringify(request)}: no final answer after ${timeoutMs} ms; ` +
                            `got ${short(lines)}`
                    )
                ),
            timeoutMs
        );
        s.setEncoding('utf8');
        s.on('connect', () =>
            s.write(typeof request === 'string' ? request : `${JSON.stringify(request)}\n`)
        );
        s.on('data', (chunk) => {
            buf += chunk;
            let nl;
            while (!done && (nl = buf.indexOf('\n')) >= 0) {
                const text = buf.slice(0, nl);
                buf = buf.slice(nl + 1);
                if (text.trim() === '') continue;
                let obj;
                try {
                    obj = JSON.parse(text);
                } catch {
                    finish(new Error(`admin: answer line is not JSON: ${text}`));
                    return;
                }
                lines.push(obj);
                if ((until && until(obj, lines)) || (!until && 'ok' in obj)) finish();
            }
        });
        s.on('error', (err) => finish(new Error(`admin: ${sock}: ${err.message}`)));
        s.on('close', () => finish());
    });
}

/** admin() and return the final line's result; throws with the error text when ok
 *  is false or there is no final line. */
export async function adminResult(stateDir, request, opts) {
    const lines = await admin(stateDir, request, opts);
    const last = lines[lines.length - 1];
    if (!last || !('ok' in last)) {
        throw new Error(`admin ${JSON.stringify(request)}: no final line; got ${short(lines)}`);
    }
    if (!last.ok) throw new Error(`admin ${JSON.stringify(request)}: ${last.error}`);
    return last.result;
}

// ---------------------------------------------------------------- HTTP

/**
 * One HTTP request (no keep-alive). Resolves {status, headers, body} with body a
 * string; rejects with the socket error (err.code, e.g. ECONNREFUSED) or on timeout.
 * body: a string or Buffer is sent as is, anything else as JSON.
 */
export function httpRequest(method, url, body, { headers = {}, timeoutMs = 30000 } = {}) {
    return new Promise((resolve, reject) => {
        let payload;
        const h = { ...headers };
        if (body !== undefined && body !== null) {
            if (typeof body === 'string' || Buffer.isBuffer(body)) {
                payload = body;
            } else {
                payload = JSON.stringify(body);
                if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) {
                    h['content-type'] = 'application/json';
                }
            }
            h['content-length'] = Buffer.byteLength(payload);
        }
        const req = http.request(url, { method, headers: h, agent: false }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () =>
                resolve({
                    status: res.statusCode,
                    headers: res.headers,
                    body: Buffer.concat(chunks).toString('utf8'),
                })
            );
            res.on('error', reject);
        });
        req.setTimeout(timeoutMs, () =>
            req.destroy(Object.assign(new Error(`${method} ${url}: timed out`), { code: 'ETIMEDOUT' }))
        );
        req.on('error', reject);
        req.end(payload);
    });
}

export const httpGet = (url, opts) => httpRequest('GET', url, undefined, opts);
export const httpPost = (url, body, opts) => httpRequest('POST', url, body, opts);

/**
 * Starts a request and resolves as soon as the response head arrives, for reading
 * a stream as it comes or dropping the connection mid-stream:
 * {status, headers, res (a readable), nextChunk(timeoutMs), abort()}.
 */
export function httpOpen(method, url, body, { headers = {} } = {}) {
    return new Promise((resolve, reject) => {
        const h = { ...headers };
        let payload;
        if (body !== undefined && body !== null) {
            payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
            if (typeof body === 'object' && !Buffer.isBuffer(body)) h['content-type'] ??= 'application/json';
            h['content-length'] = Buffer.byteLength(payload);
        }
        const req = http.request(url, { method, headers: h, agent: false }, (res) => {
            res.setEncoding('utf8');
            const queue = [];
            const waiters = [];
            let ended = false;
            res.on('data', (c) => (waiters.length ? waiters.shift()(c) : queue.push(c)));
            res.on('end', () => {
                ended = true;
                while (waiters.length) waiters.shift()(null);
            });
            res.on('error', () => {});
            resolve({
                status: res.statusCode,
                headers: res.headers,
                res,
                /** The next chunk of text, null at the end; rejects after timeoutMs. */
                nextChunk(timeoutMs = 10000) {
                    if (queue.length) return Promise.resolve(queue.shift());
                    if (ended) return Promise.resolve(null);
                    return new Promise((res2, rej2) => {
                        const t = setTimeout(() => {
                            const i = waiters.indexOf(w);
                            if (i >= 0) waiters.splice(i, 1);
                            rej2(new Error(`${method} ${url}: no data for ${timeoutMs} ms`));
                        }, timeoutMs);
                        const w = (c) => {
                            clearTimeout(t);
                            res2(c);
                        };
                        waiters.push(w);
                    });
                },
                abort: () => req.destroy(),
            });
        });
        req.on('error', reject);
        req.end(payload);
    });
}

/** GET that never rejects: {status, headers, body} or {error: 'ECONNREFUSED' | ...}. */
export async function httpProbe(url, opts = {}) {
    try {
        return await httpGet(url, { timeoutMs: 2000, ...opts });
    } catch (err) {
        return { error: err.code || err.message };
    }
}

/** Splits a text/event-stream body into events [{event, data}] in order. */
export function parseSSE(text) {
    const events = [];
    for (const block of text.replace(/\r\n/g, '\n').split('\n\n')) {
        if (block.trim() === '') continue;
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            let value = i < 0 ? '' : line.slice(i + 1);
            if (value.startsWith(' ')) value = value.slice(1);
            if (field === 'event') event = value;
            else if (field === 'data') data.push(value);
        }
        if (data.length) events.push({ event, data: data.join('\n') });
    }
    return events;
}

// ---------------------------------------------------------------- cleanup

/** Live processes (not this one) that carry this run's marker in their environment
 *  or name one of its temp dirs on their command line. */
function findLeftovers() {
    const pids = new Set(processesMatching(MARKER));
    for (const dir of tmpDirs) for (const p of processesMatching(dir)) pids.add(p);
    return [...pids];
}

/** Signals each pid's process group when the group carries the marker (an engine
 *  and its forks), else the pid alone. Never this process's own group. */
function killPids(pids, signal) {
    const ownPgid = pgidOf(process.pid);
    for (const pid of pids) {
        const pgid = pgidOf(pid);
        const groupIsOurs = pgid && pgid !== ownPgid && pgid > 1 && processesMatching(MARKER).includes(pgid);
        try {
            process.kill(groupIsOurs ? -pgid : pid, signal);
        } catch {
            // gone already
        }
    }
}

function describePids(pids) {
    return pids.map((p) => `${p} (${(cmdlineOf(p) || ['?']).join(' ')})`).join('; ');
}

/** Stops whatever this process started (daemons first, gracefully, then other
 *  processes), then looks for leftovers: anything still carrying the marker after a
 *  short grace is killed and reported. Throws when a daemon misbehaved on stop or
 *  something was left behind. Registered as an `after` hook; a test may call it. */
export async function cleanup() {
    const errors = [];
    for (const d of [...daemons]) {
        try {
            await d.stop();
        } catch (err) {
            errors.push(err.message);
        }
        daemons.delete(d);
    }
    for (const rec of tracked) signalRec(rec, 'SIGTERM');
    for (const rec of tracked) {
        if (!(await waitGone(rec, 3000))) {
            signalRec(rec, 'SIGKILL');
            await waitGone(rec, 2000);
        }
    }
    // Members of the groups just signalled may take a moment to go.
    let left = [];
    try {
        await waitFor(
            () => {
                left = findLeftovers();
                return left.length === 0;
            },
            { timeoutMs: 2000, intervalMs: 20, what: 'processes to exit' }
        );
    } catch {
        const named = describePids(left);
        killPids(left, 'SIGTERM');
        try {
            await waitFor(() => findLeftovers().length === 0, { timeoutMs: 3000, intervalMs: 20 });
        } catch {
            killPids(findLeftovers(), 'SIGKILL');
        }
        errors.push(`processes left behind (now killed): ${named}`);
    }
    if (errors.length) throw new Error(errors.join('\n'));
}

function cleanupSync() {
    for (const d of daemons) signalRec({ pid: d.pid, group: false, exited: d.exited }, 'SIGKILL');
    for (const rec of tracked) signalRec(rec, 'SIGKILL');
    killPids(findLeftovers(), 'SIGKILL');
    if (!KEEP) {
        for (const dir of tmpDirs) {
            try {
                fs.rmSync(dir, { recursive: true, force: true });
            } catch {
                // best effort
            }
        }
    }
}

/**
 * after(fn) where a test runner runs these libraries. bench/run imports them
 * without one (it sets globalThis.yardBench): a top-level after() would start
 * node:test's runner there, which prints its TAP report into the bench output.
 * The bench stops what it starts itself; the exit handlers stay the backstop.
 */
export function atEnd(fn) {
    if (!globalThis.yardBench) after(fn);
}

atEnd(async () => {
    await cleanup();
});
process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
        cleanupSync();
        process.exit(128 + os.constants.signals[sig]);
    });
}

export { assert };
