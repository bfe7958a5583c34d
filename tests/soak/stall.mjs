// Soak: streaming clients that stop reading and an engine that floods its log.
// Memory and disk stay bounded while it lasts and return once it is over.
//
// One daemon, log_max_size 10 MiB (the default), two vLLM mock models: `m` (500 tokens/s per
// stream) and `flood`, whose command also writes FLOOD_MB of 100-byte lines to
// the engine's log as fast as awk can (hundreds of MB/s), then touches a marker
// file. The stalled clients are e2e/tools/stall_clients.py (a 4 KiB receive buffer
// each, so what yard cannot send waits in yard, not in the kernel): each asks
// `m` for a long stream, reads its first event, and never reads again.
//
// Baseline: after a warm-up round of 50 stalled clients (so that pools and the
// allocator have seen the load once) have left, with the models stopped (as in
// leak.mjs: the upstream pool's idle engine connections go with the engine).
// Then SOAK_STALLED clients
// (default 300) stall while `flood` starts and floods, and:
//   - RSS:   the daemon's peak RSS over the baseline, per stalled client, stays
//            under router.max_buffered_per_client (256 KiB), and no client was
//            dropped at that cap (the relay paused the engine first)
//   - a fresh request is answered while they are stalled
//   - disk:  logs/flood.log plus logs/flood.log.1, sampled every 20 ms during
//            the flood, never pass 2x log_max_size (+ one 64 KiB read)
//   - after: the clients leave and both models stop; the daemon holds no client
//            connection and its RSS is back at baseline + max(2 MiB, 10%)

import fs from 'node:fs';
import path from 'node:path';
import * as h from '../e2e/lib/harness.mjs';
import { mockCmd, rawConnect, rawRequest, tcpAccepts, stallClients } from '../e2e/lib/router-helpers.mjs';
import { trackNeedle, trackPs } from './lib/cleanup.mjs';
import { rssKiB, clientConns, fdTargets, mib, settle, tcpSockets } from './lib/common.mjs';
import { startModel, stopModel } from './lib/conns.mjs';

const LOG_CAP = 10 * 1024 * 1024;
const stallBody = { model: 'm', stream: true, max_tokens: 1000000, messages: [{ role: 'user', content: 'stall' }] };
const FLOOD_MB = 256;
const PER_CLIENT_CAP_KIB = 256;
const RSS_SLACK_KIB = 2048;
const RSS_SLACK_FRACTION = 0.1;

async function daemon() {
    const dir = h.tmpdir('yard-soak-');
    const port = await h.freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    const flood = path.join(dir, 'flood.sh');
    const lines = Math.round((FLOOD_MB * 1024 * 1024) / 100);
    fs.writeFileSync(
        flood,
        '#!/bin/sh\n' +
            '# a log flood next to a mock engine: 100-byte lines as fast as awk writes them\n' +
            `(awk -v n=${lines} 'BEGIN { pad = sprintf("%84s", ""); gsub(/ /, "x", pad); ` +
            `for (i = 0; i < n; i++) printf "flood %08d %s\\n", i, pad }' >&2; touch ${dir}/flood.done) &\n` +
            `exec ${h.MOCK_ENGINE_BIN} --flavor vllm --port "$1" --name "$2" --load-time 200ms\n`
    );
    let y = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\nlog_max_size: ${LOG_CAP}\n`;
    y += `defaults: ${JSON.stringify({ stop_timeout: '2s', startup_timeout: '30s' })}\n`;
    y += `router: ${JSON.stringify({ max_connections: 4096 })}\n`;
    y += 'models:\n';
    y += `  m: ${JSON.stringify({ engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms --tokens-per-sec 500') })}\n`;
    y += `  flood: ${JSON.stringify({ engine: 'vllm', cmd: `sh ${flood} \${PORT} \${NAME}` })}\n`;
    const config = h.writeConfig(dir, y);
    const d = await h.startDaemon({ config, stateDir: dir });
    await h.waitFor(() => tcpAccepts(port), { timeoutMs: 10000, what: 'yard listening' });
    return { dir, port, d };
}

/** Size of a file, 0 when it does not exist. */
function size(p) {
    try {
        return fs.statSync(p).size;
    } catch {
        return 0;
    }
}

/**
 * How many of the daemon's connections to engines have bytes waiting that it
 * does not read: the relay paused them because their client stopped reading
 * (a stream the daemon reads has an empty receive queue).
 */
function pausedUpstreams(pid, listenPort) {
    const socks = tcpSockets();
    let n = 0;
    for (const t of Object.values(fdTargets(pid))) {
        const m = t.match(/^socket:\[(\d+)\]$/);
        const s = m && socks.get(m[1]);
        // established, not a client's, with bytes waiting
        if (s && s.state === '01' && s.local !== listenPort && s.rxQueue > 0) n++;
    }
    return n;
}

/**
 * Waits until the relay has paused the engine stream of every stalled client
 * (what a stalled client costs the daemon is then at its most: the kernel's
 * socket buffers toward the client are full, a few MiB each on loopback, and
 * the daemon's queue is past the pause mark). Returns whether that happened
 * within 180 s.
 */
async function stalledSteady(pid, listenPort, n) {
    const r = await settle(
        () => {
            const paused = pausedUpstreams(pid, listenPort);
            return { ok: paused >= n, paused };
        },
        { timeoutMs: 180000, intervalMs: 500 }
    );
    return r;
}

/** Waits until the daemon holds no client connection and its RSS is steady; returns the RSS. */
async function quiet(pid, port) {
    await settle(
        () => {
            const n = clientConns(pid, port);
            return { ok: n === 0, n };
        },
        { timeoutMs: 15000 }
    );
    let last = rssKiB(pid);
    const r = await settle(
        () => {
            const now = rssKiB(pid);
            const ok = Math.abs(now - last) <= 64;
            last = now;
            return { ok, now };
        },
        { timeoutMs: 10000, intervalMs: 300 }
    );
    return r.now;
}

export async function run(report, { stalled }) {
    const y = await daemon();
    trackNeedle(y.dir);
    const pid = y.d.pid;
    await startModel(y.dir, 'm');
    trackPs(await h.ps(y.dir));

    // Warm-up, then the baseline with the models stopped: the upstream pool
    // keeps idle engine connections, which go with the engine.
    const warm = await stallClients(y.dir, y.port, Math.min(50, stalled), stallBody);
    await warm.close();
    await stopModel(y.dir, 'm');
    const rss0 = await quiet(pid, y.port);
    await startModel(y.dir, 'm');

    // The stall and the flood together.
    let peakRss = rss0;
    let peakDisk = 0;
    let peakLog = 0;
    const log = path.join(y.dir, 'logs', 'flood.log');
    const sampler = setInterval(() => {
        peakRss = Math.max(peakRss, rssKiB(pid) || 0);
        const a = size(log);
        peakLog = Math.max(peakLog, a);
        peakDisk = Math.max(peakDisk, a + size(`${log}.1`));
    }, 20);
    let clients;
    let servedWhileStalled = null;
    let floodDone = false;
    let steady = false;
    let pausedSeen = 0;
    try {
        clients = await stallClients(y.dir, y.port, stalled, stallBody);
        const st = await stalledSteady(pid, y.port, clients.n);
        steady = st.ok;
        pausedSeen = st.paused;
        peakRss = Math.max(peakRss, rssKiB(pid) || 0);
        await startModel(y.dir, 'flood');
        trackPs(await h.ps(y.dir));
        floodDone = await h
            .waitFor(() => fs.existsSync(path.join(y.dir, 'flood.done')), { timeoutMs: 120000, what: 'the flood' })
            .then(
                () => true,
                () => false
            );
        // The daemon reads what is left of the flood; sizes settle.
        let last = -1;
        await settle(
            () => {
                const now = size(log) + size(`${log}.1`);
                const ok = now === last;
                last = now;
                return { ok };
            },
            { timeoutMs: 10000, intervalMs: 250 }
        );
        const c = await rawConnect(y.port);
        c.send(
            rawRequest('POST', '/v1/chat/completions', {
                model: 'm',
                max_tokens: 4,
                messages: [{ role: 'user', content: 'hi' }],
            })
        );
        servedWhileStalled = (await c.responses(1, 30000))[0].status;
        c.destroy();
        peakRss = Math.max(peakRss, rssKiB(pid) || 0);
    } finally {
        clearInterval(sampler);
        if (clients) await clients.close();
    }
    await stopModel(y.dir, 'flood');
    await stopModel(y.dir, 'm');
    const rss1 = await quiet(pid, y.port);
    const held = clientConns(pid, y.port);
    const logText = y.d.logText();
    const capDrops = (logText.match(/per client\); dropping it/g) || []).length;
    const allDrops = (logText.match(/dropping it/g) || []).length;

    const perClient = (peakRss - rss0) / Math.max(1, clients.n);
    report.info(
        `stall: ${clients.n} clients stalled (${clients.failed} failed to start); RSS baseline ${mib(rss0)}, ` +
            `peak ${mib(peakRss)} (+${perClient.toFixed(0)} KiB per stalled client), after ${mib(rss1)}; ` +
            `${allDrops} clients dropped by a cap`
    );
    report.check(
        `stall: ${stalled} stalled SSE clients each hold less than the per-client cap`,
        clients.n === stalled && steady && perClient < PER_CLIENT_CAP_KIB && capDrops === 0,
        `${clients.n} of ${stalled} stalled, ${pausedSeen} engine streams paused` +
            `${steady ? '' : ' (not all within 180 s)'}; ` +
            `+${perClient.toFixed(0)} KiB RSS per client ` +
            `(cap ${PER_CLIENT_CAP_KIB} KiB); ${capDrops} dropped at router.max_buffered_per_client`
    );
    report.check(
        'stall: a fresh request is answered while they are stalled',
        servedWhileStalled === 200,
        `status ${servedWhileStalled}`
    );
    const slack = Math.max(RSS_SLACK_KIB, Math.round(rss0 * RSS_SLACK_FRACTION));
    report.check(
        'stall: RSS back to baseline after the stalled clients leave',
        held === 0 && rss1 <= rss0 + slack,
        `baseline ${mib(rss0)}, peak ${mib(peakRss)}, after ${mib(rss1)} ` +
            `(${rss1 >= rss0 ? '+' : ''}${((rss1 - rss0) / 1024).toFixed(2)} MiB; allowed +${mib(slack)}); ` +
            `${held} client connections left`
    );
    const diskCap = 2 * LOG_CAP + 64 * 1024;
    report.check(
        `flood: ${FLOOD_MB} MB of engine log keep flood.log + flood.log.1 within 2x log_max_size`,
        floodDone && peakDisk <= diskCap,
        `peak ${mib(peakDisk / 1024)} (flood.log alone ${mib(peakLog / 1024)}); allowed ${mib(diskCap / 1024)} ` +
            `(log_max_size ${mib(LOG_CAP / 1024)})` +
            (floodDone ? '' : '; the flood did not finish within 120 s')
    );
    await y.d.stop();
}
