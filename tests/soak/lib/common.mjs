// Shared pieces of the soak tier (tests/soak/, docs/testing.md "Soak"): the
// PASS/FAIL report, /proc readers (mock engines, fds, RSS), the store's integrity
// check, small statistics. Process tracking and cleanup come from the e2e harness
// (tests/e2e/lib/harness.mjs), which every soak script imports.

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { MOCK_ENGINE_BIN, pgidOf, sleep } from '../../e2e/lib/harness.mjs';

// ---------------------------------------------------------------- report

/** Collects checks; each prints one line `PASS name: details` or `FAIL ...`. */
export class Report {
    constructor() {
        this.passed = 0;
        this.failed = 0;
    }

    check(name, ok, details) {
        if (ok) this.passed++;
        else this.failed++;
        console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${details}`);
        return ok;
    }

    /** A line of context (indented), never counted. */
    info(text) {
        for (const line of String(text).split('\n')) console.log(`     ${line}`);
    }

    summary() {
        return `${this.passed} passed, ${this.failed} failed`;
    }
}

// ---------------------------------------------------------------- numbers

export function median(xs) {
    return percentile(xs, 50);
}

export function percentile(xs, p) {
    if (!xs.length) return NaN;
    const s = [...xs].sort((a, b) => a - b);
    const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
    return s[i];
}

export const ms = (x) => (Number.isFinite(x) ? `${x.toFixed(x < 10 ? 2 : 0)} ms` : 'n/a');
export const mib = (kib) => `${(kib / 1024).toFixed(2)} MiB`;

/** A random integer in [lo, hi]. */
export const randInt = (lo, hi) => lo + Math.floor(Math.random() * (hi - lo + 1));

// ---------------------------------------------------------------- /proc

function statOf(pid) {
    let text;
    try {
        text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
        return null;
    }
    const rest = text.slice(text.lastIndexOf(')') + 2).trim().split(/\s+/);
    return { state: rest[0], ppid: Number(rest[1]), pgid: Number(rest[2]), starttime: Number(rest[19]) };
}

/**
 * Live (not zombie) mock-engine processes whose command line contains `needle`
 * (a path unique to one soak run, such as its ledger file): [{pid, pgid, name,
 * starttime, argv}], name being the --name value.
 */
export function mockEngines(needle) {
    const bin = path.resolve(MOCK_ENGINE_BIN);
    const out = [];
    for (const e of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(e)) continue;
        const pid = Number(e);
        let argv;
        try {
            argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
        } catch {
            continue;
        }
        if (!argv.length || path.resolve(argv[0]) !== bin || !argv.some((a) => a.includes(needle))) continue;
        const st = statOf(pid);
        if (!st || st.state === 'Z' || st.state === 'X') continue;
        const i = argv.indexOf('--name');
        out.push({ pid, pgid: st.pgid, name: i >= 0 ? argv[i + 1] : '?', starttime: st.starttime, argv });
    }
    return out;
}

/** Number of open file descriptors of pid, or null when it is gone. */
export function fdCount(pid) {
    try {
        return fs.readdirSync(`/proc/${pid}/fd`).length;
    } catch {
        return null;
    }
}

/** What each fd of pid points at ("socket:[123]", "/path", "anon_inode:[eventfd]"). */
export function fdTargets(pid) {
    const out = {};
    let fds = [];
    try {
        fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
        return out;
    }
    for (const fd of fds) {
        try {
            out[fd] = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
            // closed meanwhile
        }
    }
    return out;
}

/** Socket inodes -> {local, remote, state, rxQueue} from /proc/net/tcp and tcp6
 *  (rxQueue: bytes received that the owner has not read). */
export function tcpSockets() {
    const map = new Map();
    for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
        let text = '';
        try {
            text = fs.readFileSync(f, 'utf8');
        } catch {
            continue;
        }
        for (const line of text.split('\n').slice(1)) {
            const c = line.trim().split(/\s+/);
            if (c.length < 10) continue;
            const port = (a) => parseInt(a.split(':')[1], 16);
            const rxQueue = parseInt(c[4].split(':')[1], 16); // tx_queue:rx_queue
            map.set(c[9], { local: port(c[1]), remote: port(c[2]), state: c[3], rxQueue });
        }
    }
    return map;
}

/** How many of pid's fds are accepted TCP connections on listenPort (the listener
 *  itself not counted). */
export function clientConns(pid, listenPort) {
    const socks = tcpSockets();
    let n = 0;
    for (const target of Object.values(fdTargets(pid))) {
        const m = target.match(/^socket:\[(\d+)\]$/);
        const s = m && socks.get(m[1]);
        if (s && s.state !== '0A' && s.local === listenPort) n++;
    }
    return n;
}

/** A short description of fds of pid grouped by kind, for failure messages. */
export function describeFds(pid, listenPort) {
    const socks = tcpSockets();
    const kinds = {};
    for (const target of Object.values(fdTargets(pid))) {
        let kind = target.replace(/\[\d+\]$/, '');
        const m = target.match(/^socket:\[(\d+)\]$/);
        if (m) {
            const s = socks.get(m[1]);
            if (!s) kind = 'socket (unix or other)';
            else if (s.state === '0A') kind = `tcp listen :${s.local}`;
            else if (s.local === listenPort) kind = `tcp client conn (state ${s.state})`;
            else kind = `tcp to :${s.remote} (state ${s.state})`;
        } else if (target.startsWith('/')) {
            kind = target;
        }
        kinds[kind] = (kinds[kind] || 0) + 1;
    }
    return Object.entries(kinds)
        .sort((a, b) => b[1] - a[1])
        .map(([k, n]) => `${n}x ${k}`)
        .join(', ');
}

/** VmRSS of pid in KiB, or null. */
export function rssKiB(pid) {
    try {
        const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)\s+kB/m);
        return m ? Number(m[1]) : null;
    } catch {
        return null;
    }
}

/** Polls fn until it returns a truthy value or the deadline passes; returns the last value. */
export async function settle(fn, { timeoutMs = 10000, intervalMs = 50 } = {}) {
    const deadline = Date.now() + timeoutMs;
    let v = await fn();
    while (!v.ok && Date.now() < deadline) {
        await sleep(intervalMs);
        v = await fn();
    }
    return v;
}

// ---------------------------------------------------------------- ownership

/**
 * Compares the live mock engines of a run with `yard ps --json` entries:
 *   orphans:    engines whose process group is no instance's (pid = group leader)
 *   duplicates: models with more than one live engine process group
 * Each entry is a short human-readable string.
 */
export function ownership(engines, psList) {
    const owner = new Map(); // pgid -> ps entry
    for (const e of psList) {
        if (e.pid > 0) {
            owner.set(e.pid, e);
            const g = pgidOf(e.pid);
            if (g) owner.set(g, e);
        }
    }
    const orphans = [];
    for (const p of engines) {
        const e = owner.get(p.pgid) || owner.get(p.pid);
        if (!e) orphans.push(`pid ${p.pid} (${p.name}, pgid ${p.pgid}) is no instance's`);
        else if (e.name !== p.name)
            orphans.push(`pid ${p.pid} serves '${p.name}' but yard ps has it as '${e.name}'`);
    }
    return { orphans, duplicates: duplicates(engines) };
}

/** Models served by more than one live engine process group at once. */
export function duplicates(engines) {
    const byName = new Map();
    for (const p of engines) {
        if (!byName.has(p.name)) byName.set(p.name, new Set());
        byName.get(p.name).add(p.pgid);
    }
    const out = [];
    for (const [name, groups] of byName) {
        if (groups.size > 1) out.push(`'${name}' has ${groups.size} engine groups: ${[...groups].join(', ')}`);
    }
    return out;
}

// ---------------------------------------------------------------- the store

/** STATE_DIR/yard.db (docs/store.md). */
export const storePath = (stateDir) => path.join(stateDir, 'yard.db');

/**
 * `PRAGMA integrity_check` on the state database through the sqlite3 CLI, read-only
 * (so it never checkpoints or rewrites what the daemon left). Returns { ok, text }.
 */
export function integrityCheck(stateDir) {
    const file = storePath(stateDir);
    if (!fs.existsSync(file)) return { ok: false, text: `${file} does not exist` };
    const r = spawnSync('sqlite3', ['-readonly', '-bail', file, 'PRAGMA integrity_check;'], {
        encoding: 'utf8',
        timeout: 30000,
        env: { ...process.env, HOME: stateDir }, // no ~/.sqliterc
    });
    if (r.error) return { ok: false, text: `sqlite3: ${r.error.message}` };
    const text = `${r.stdout}${r.stderr}`.trim();
    return { ok: r.status === 0 && text === 'ok', text };
}
