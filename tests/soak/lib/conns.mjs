// Connections for the leak and idle soaks: a daemon with one mock model, and one
// client connection of each kind the churn mixes (requests, keep-alive reuse,
// idle ones closed by either side, connections cut at every stage).

import net from 'node:net';
import * as h from '../../e2e/lib/harness.mjs';
import { mockCmd, rawConnect, rawRequest, tcpAccepts, withTimeout } from '../../e2e/lib/router-helpers.mjs';
import { randInt } from './common.mjs';

/**
 * Writes a config with one vLLM mock model `m` (fast tokens) and starts the
 * daemon; `router` is merged into the router section. Returns { dir, port, base, d }.
 */
export async function oneModelDaemon({ router = {}, tokensPerSec = 2000 } = {}) {
    const dir = h.tmpdir('yard-soak-');
    const port = await h.freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    const cmd = mockCmd('vllm', `--load-time 200ms --tokens-per-sec ${tokensPerSec} --ledger ${dir}/ledger`);
    let y = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n`;
    y += `defaults: ${JSON.stringify({ stop_timeout: '2s', startup_timeout: '30s' })}\n`;
    y += `router: ${JSON.stringify(router)}\n`;
    y += `models:\n  m: ${JSON.stringify({ engine: 'vllm', cmd })}\n`;
    const config = h.writeConfig(dir, y);
    const d = await h.startDaemon({ config, stateDir: dir });
    const base = `http://127.0.0.1:${port}`;
    await h.waitFor(() => tcpAccepts(port), { timeoutMs: 10000, what: `yard listening on ${base}` });
    return { dir, port, base, d, config };
}

/** `yard start m --wait`, or throws with its output. */
export async function startModel(dir, model = 'm') {
    const r = await h.yard(['start', model, '--wait'], { stateDir: dir, timeoutMs: 60000 });
    if (r.code !== 0) throw new Error(`yard start ${model} --wait exited ${r.code}: ${r.stderr}${r.stdout}`);
    await h.waitState(dir, model, 'ready', 30000);
}

/** `yard stop m`, then waits until yard ps shows it stopped. */
export async function stopModel(dir, model = 'm') {
    const r = await h.yard(['stop', model], { stateDir: dir, timeoutMs: 60000 });
    if (r.code !== 0) throw new Error(`yard stop ${model} exited ${r.code}: ${r.stderr}${r.stdout}`);
    await h.waitState(dir, model, 'stopped', 30000);
}

export const chatReq = (stream, maxTokens, headers = {}) =>
    rawRequest(
        'POST',
        '/v1/chat/completions',
        { model: 'm', stream, max_tokens: maxTokens, messages: [{ role: 'user', content: 'soak' }] },
        headers
    );

/** Resolves when the socket has closed (true) or after ms (false). */
function closed(conn, ms) {
    return conn.waitClose(ms);
}

/** Destroys the socket with a FIN (end) or, half of the time, an RST. */
function drop(conn) {
    const s = conn.socket;
    if (Math.random() < 0.5 && typeof s.resetAndDestroy === 'function') s.resetAndDestroy();
    else s.destroy();
}

/**
 * The kinds of connection the churn mixes, with their weights. Each opens one
 * connection, does its thing and leaves it closed; it resolves a string when
 * something did not behave (a wrong status, a connection the server did not
 * close when it should), else null.
 */
export const KINDS = [
    // one request, Connection: close: the server answers and closes
    {
        name: 'request+close',
        weight: 20,
        async run(ctx) {
            const c = await ctx.open();
            c.send(chatReq(Math.random() < 0.5, 8, { connection: 'close' }));
            const [r] = await c.responses(1, 15000);
            const bye = await closed(c, 5000);
            c.destroy();
            if (r.status !== 200) return `status ${r.status}`;
            return bye ? null : 'not closed after Connection: close';
        },
    },
    // 2-5 requests reusing one keep-alive connection, then the client leaves
    {
        name: 'keep-alive',
        weight: 20,
        async run(ctx) {
            const c = await ctx.open();
            const n = randInt(2, 5);
            let bad = null;
            for (let i = 1; i <= n; i++) {
                const pick = i % 3;
                if (pick === 0) c.send(rawRequest('GET', '/health'));
                else c.send(chatReq(pick === 1, randInt(2, 12)));
                const rs = await c.responses(i, 15000);
                if (rs[i - 1].status !== 200) bad = `request ${i}: status ${rs[i - 1].status}`;
            }
            if (Math.random() < 0.5) c.socket.end();
            else drop(c);
            await closed(c, 2000);
            c.destroy();
            return bad;
        },
    },
    // connects and leaves without a byte
    {
        name: 'idle, client closes',
        weight: 15,
        async run(ctx) {
            const c = await ctx.open();
            await h.sleep(randInt(0, 10));
            drop(c);
            return null;
        },
    },
    // connects and waits until the server's idle_timeout closes it
    {
        name: 'idle, server closes',
        weight: 3,
        async run(ctx) {
            const c = await ctx.open();
            const bye = await closed(c, ctx.idleTimeoutMs + 4000);
            c.destroy();
            return bye ? null : `not closed after idle_timeout (${ctx.idleTimeoutMs} ms)`;
        },
    },
    // a request head cut halfway
    {
        name: 'cut in the head',
        weight: 10,
        async run(ctx) {
            const c = await ctx.open();
            const full = chatReq(false, 4);
            c.send(full.slice(0, randInt(5, full.indexOf('\r\n\r\n'))));
            await h.sleep(randInt(0, 5));
            drop(c);
            return null;
        },
    },
    // the head whole, the body cut
    {
        name: 'cut in the body',
        weight: 7,
        async run(ctx) {
            const c = await ctx.open();
            const full = chatReq(false, 4);
            const bodyAt = full.indexOf('\r\n\r\n') + 4;
            c.send(full.slice(0, bodyAt + randInt(0, full.length - bodyAt - 1)));
            await h.sleep(randInt(0, 5));
            drop(c);
            return null;
        },
    },
    // a stream cut after its first bytes (the upstream request must be cancelled)
    {
        name: 'cut mid-stream',
        weight: 15,
        async run(ctx) {
            const c = await ctx.open();
            c.send(chatReq(true, 200));
            await c.waitData((b) => b.includes('data:'), 15000, 'the first SSE frame').catch(() => null);
            drop(c);
            return null;
        },
    },
    // a whole answer being generated when the client leaves
    {
        name: 'cut while waiting',
        weight: 5,
        async run(ctx) {
            const c = await ctx.open();
            c.send(chatReq(false, 200));
            await h.sleep(randInt(1, 30));
            drop(c);
            return null;
        },
    },
    // bytes that are not HTTP: 400 and close
    {
        name: 'garbage',
        weight: 5,
        async run(ctx) {
            const c = await ctx.open();
            c.send('HELLO THERE\r\n\r\n');
            const r = await c.responses(1, 5000).catch(() => null);
            const bye = await closed(c, 5000);
            c.destroy();
            if (!r) return 'no answer to garbage';
            if (r[0].status !== 400) return `garbage answered ${r[0].status}`;
            return bye ? null : 'not closed after 400';
        },
    },
];

/** The kind of connection number i (0-based): weights spread evenly over i. */
function kindOf(i) {
    const total = KINDS.reduce((a, k) => a + k.weight, 0);
    let slot = (i * 37) % total; // 37 is prime to 100: consecutive connections differ
    for (const k of KINDS) {
        if (slot < k.weight) return k;
        slot -= k.weight;
    }
    return KINDS[0];
}

/**
 * Opens `total` connections, `concurrency` at a time, each of the kind its number
 * gives. Calls onSample() every 100 connections (for peak readings). Resolves
 * { byKind: {name: count}, problems: [string], errors: [string], ms }.
 */
export async function churn(port, total, { concurrency = 32, idleTimeoutMs, onSample } = {}) {
    const byKind = {};
    const problems = [];
    const errors = [];
    let next = 0;
    const t0 = Date.now();
    const worker = async () => {
        for (;;) {
            const i = next++;
            if (i >= total) return;
            if (onSample && i % 100 === 0) onSample();
            const k = kindOf(i);
            byKind[k.name] = (byKind[k.name] || 0) + 1;
            const conns = [];
            const ctx = {
                idleTimeoutMs,
                open: async () => {
                    const c = await rawConnect(port);
                    conns.push(c);
                    return c;
                },
            };
            try {
                const p = await withTimeout(k.run(ctx), 30000, 'timed out after 30 s');
                if (p) problems.push(`${k.name}: ${p}`);
            } catch (err) {
                errors.push(`${k.name}: ${err.code || err.message}`);
            } finally {
                for (const c of conns) c.destroy(); // whatever happened, the client side is closed
            }
        }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { byKind, problems, errors, ms: Date.now() - t0 };
}

/** Groups messages: "3x a | 1x b". */
export function tally(list, n = 4) {
    const m = {};
    for (const x of list) m[x.slice(0, 200)] = (m[x.slice(0, 200)] || 0) + 1;
    return Object.entries(m)
        .sort((a, b) => b[1] - a[1])
        .slice(0, n)
        .map(([k, c]) => `${c}x ${k}`)
        .join(' | ');
}

/** Opens one plain TCP connection and resolves it once connected. */
export function connect(port) {
    return new Promise((resolve, reject) => {
        const s = net.createConnection({ host: '127.0.0.1', port });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
    });
}
