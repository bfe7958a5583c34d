// Soak: 1,000 idle keep-alive connections do not slow a fresh request.
//
// One daemon (router.max_connections 4096, idle_timeout 10m), one vLLM mock
// model generating as fast as it can. A fresh request is a new connection, a
// 4-token chat completion, the whole answer read, the connection closed. It is
// timed 100 times (after 20 untimed) with no other connection open; then 1,000
// connections each make one keep-alive request and stay open, idle; then the
// fresh request is timed 100 times again. The machine is shared and noisy, so
// only a gross slowdown fails: the median with idle connections more than 10x
// the median without AND more than 50 ms above it. Also checked: the daemon
// really holds the idle connections (its accepted sockets, from /proc/PID/fd and
// /proc/net/tcp), they still answer afterwards, and once the client closes them
// the daemon holds none.

import http from 'node:http';
import * as h from '../e2e/lib/harness.mjs';
import { rawConnect, rawRequest } from '../e2e/lib/router-helpers.mjs';
import { trackNeedle, trackPs } from './lib/cleanup.mjs';
import { clientConns, median, percentile, ms, settle } from './lib/common.mjs';
import { oneModelDaemon, startModel, chatReq } from './lib/conns.mjs';

const FACTOR = 10;
const MIN_EXTRA_MS = 50;
const TIMED = 100;

/** One fresh connection, one request, the whole answer: resolves milliseconds. */
function freshRequest(base) {
    const body = JSON.stringify({ model: 'm', max_tokens: 4, messages: [{ role: 'user', content: 'x' }] });
    return new Promise((resolve, reject) => {
        const t0 = process.hrtime.bigint();
        const req = http.request(
            `${base}/v1/chat/completions`,
            {
                method: 'POST',
                agent: false,
                headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
            },
            (res) => {
                res.resume();
                res.on('end', () => {
                    if (res.statusCode !== 200) reject(new Error(`fresh request: status ${res.statusCode}`));
                    else resolve(Number(process.hrtime.bigint() - t0) / 1e6);
                });
            }
        );
        req.setTimeout(30000, () => req.destroy(new Error('fresh request: no answer in 30 s')));
        req.on('error', reject);
        req.end(body);
    });
}

async function timeFresh(base, n) {
    for (let i = 0; i < 20; i++) await freshRequest(base);
    const out = [];
    for (let i = 0; i < n; i++) out.push(await freshRequest(base));
    return out;
}

export async function run(report, { idle }) {
    const y = await oneModelDaemon({
        router: { idle_timeout: '10m', max_connections: 4096 },
        tokensPerSec: 0,
    });
    trackNeedle(y.dir);
    const pid = y.d.pid;
    await startModel(y.dir);
    trackPs(await h.ps(y.dir));

    const without = await timeFresh(y.base, TIMED);
    // The timed connections are closed by now, or about to be.
    const held0 = (
        await settle(
            () => {
                const n = clientConns(pid, y.port);
                return { ok: n === 0, n };
            },
            { timeoutMs: 5000 }
        )
    ).n;

    // idle keep-alive connections: one request each, then nothing
    const conns = [];
    let next = 0;
    const problems = [];
    const opener = async () => {
        while (next < idle) {
            next++;
            const c = await rawConnect(y.port);
            conns.push(c);
            c.send(next % 2 ? chatReq(false, 2) : rawRequest('GET', '/health'));
            const [r] = await c.responses(1, 15000);
            if (r.status !== 200) problems.push(`status ${r.status}`);
        }
    };
    try {
        await Promise.all(Array.from({ length: 50 }, opener));
        const held = clientConns(pid, y.port);
        const withIdle = await timeFresh(y.base, TIMED);
        const closedMeanwhile = conns.filter((c) => c.closed).length;

        // A few of the idle connections still answer.
        let reused = 0;
        for (const c of conns.slice(0, 20)) {
            const had = (await c.responses(1, 1000)).length;
            c.send(chatReq(false, 2));
            const rs = await c.responses(had + 1, 15000);
            if (rs[had].status === 200) reused++;
        }
        for (const c of conns) c.destroy();
        const back = await settle(
            () => {
                const n = clientConns(pid, y.port);
                return { ok: n === held0, n };
            },
            { timeoutMs: 10000, intervalMs: 100 }
        );

        const m0 = median(without);
        const m1 = median(withIdle);
        const slow = m1 > FACTOR * m0 && m1 - m0 > MIN_EXTRA_MS;
        report.check(
            `idle: ${idle} idle keep-alive connections do not slow a fresh request`,
            !slow,
            `fresh request without: median ${ms(m0)}, p90 ${ms(percentile(without, 90))}; ` +
                `with ${idle} idle: median ${ms(m1)}, p90 ${ms(percentile(withIdle, 90))} ` +
                `(${(m1 / m0).toFixed(2)}x; fails only above ${FACTOR}x and +${MIN_EXTRA_MS} ms)`
        );
        report.check(
            `idle: the daemon holds ${idle} idle connections and lets them go`,
            held - held0 === idle && closedMeanwhile === 0 && reused === 20 && back.ok && problems.length === 0,
            `client connections held by the daemon: ${held0} -> ${held} with the idle ones -> ${back.n} ` +
                `after they closed; ` +
                `${closedMeanwhile} closed by the server meanwhile, ${reused}/20 reused fine` +
                (problems.length ? `; ${problems.length} bad answers while opening: ${problems[0]}` : '')
        );
    } finally {
        for (const c of conns) c.destroy();
    }
    await y.d.stop();
}
