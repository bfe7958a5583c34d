// Section "slurm": models as jobs of a real single-node Slurm cluster
// (tests/e2e/lib/slurm.mjs: Debian's slurmctld and slurmd with a private munged,
// all in a temp dir, found through SLURM_CONF).
//
//   ready    = the mock engine's own instant of readiness (--ready-stamp,
//              CLOCK_MONOTONIC) -> yard's `ready` event reaching an `events`
//              follower (this process, same clock), for `rounds` starts of a
//              model (`yard start`, each a job submitted, run, then cancelled
//              by the stop), on a cluster entry with the default poll (10 s)
//   renewal  = a model on a cluster entry (polled every second, so that the
//              section stays short) whose jobs have a 1-minute limit renewed
//              55 s before it: one keep-alive client posts chats back to back
//              from the first job's readiness until 3 s after the replacement
//              took over; every request that is not a 200 with an answer is
//              counted failed
//
// Skipped with the reason where Slurm cannot run here (not root, slurm-wlm or
// munge missing).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
    tmpdir,
    startYard,
    admin,
    followEvents,
    waitFor,
    mockCmd,
    ps,
    summary,
    put,
    round,
    log,
    monoNs,
    timedRequest,
} from './util.mjs';

const CHAT = JSON.stringify({ model: 'w', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 });

/** Chats posted back to back on one keep-alive connection until stop() is called. */
function steadyClient(port) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const c = { requests: 0, failed: 0, errors: [], stopped: false };
    const one = () =>
        new Promise((resolve) => {
            const req = http.request(
                {
                    host: '127.0.0.1',
                    port,
                    path: '/v1/chat/completions',
                    method: 'POST',
                    agent,
                    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(CHAT) },
                    timeout: 30000,
                },
                (res) => {
                    let body = '';
                    res.on('data', (d) => (body += d));
                    res.on('end', () => resolve(res.statusCode === 200 && body.includes('"choices"') ? null : `${res.statusCode} ${body.slice(0, 200)}`));
                    res.on('error', (e) => resolve(String(e)));
                }
            );
            req.on('timeout', () => req.destroy(new Error('no answer in 30 s')));
            req.on('error', (e) => resolve(String(e)));
            req.end(CHAT);
        });
    c.done = (async () => {
        while (!c.stopped) {
            const err = await one();
            c.requests++;
            if (err) {
                c.failed++;
                if (c.errors.length < 5) c.errors.push(err);
            }
        }
        agent.destroy();
    })();
    c.stop = async () => {
        c.stopped = true;
        await c.done;
    };
    return c;
}

export async function runSlurm(p) {
    const lib = await import('../../tests/e2e/lib/slurm.mjs');
    const why = lib.slurmSkipReason();
    if (why) return { skipped: `no Slurm here: ${why}` };
    const t0 = monoNs();
    const s = await lib.startSlurm({ gpus: 0, killWait: 2 });
    if (s.skipReason) return { skipped: `no Slurm here: ${s.skipReason}` };
    const saved = {};
    let y = null;
    let ev = null;
    try {
        const clusterMs = (monoNs() - t0) / 1e6;
        for (const [k, v] of Object.entries(s.env)) {
            saved[k] = process.env[k];
            process.env[k] = v;
        }
        const dir = tmpdir('yb-slurm-');
        const stamp = path.join(dir, 'ready');
        const top =
            'slurm:\n' +
            `  c1: { partition: ${s.partition}, time: 5m }\n` +
            `  c2: { partition: ${s.partition}, time: 1m, renew_before: 55s, poll: 1s }\n`;
        y = await startYard({
            top,
            models: {
                m: { engine: 'vllm', hosts: ['c1'], gpus: 0, cmd: mockCmd('vllm', `--load-time 300ms --ready-stamp ${stamp}`) },
                w: { engine: 'vllm', hosts: ['c2'], gpus: 0, cmd: mockCmd('vllm', '--load-time 300ms') },
            },
        });
        const readyAt = new Map();
        const takeover = { at: 0, reason: '' };
        ev = followEvents(y.stateDir, (e, at) => {
            if (e.to === 'ready' && e.from !== 'ready') readyAt.set(e.model, at);
            if (e.model === 'w' && /replaced job .* ahead of its time limit/.test(e.reason || '') && !takeover.at) {
                takeover.at = at;
                takeover.reason = e.reason;
            }
        });
        await new Promise((r) => setTimeout(r, 100)); // the follower's backlog read

        const ready = [];
        const starts = [];
        for (let i = 0; i < p.rounds; i++) {
            fs.rmSync(stamp, { force: true });
            readyAt.delete('m');
            const ts = monoNs();
            await admin(y.stateDir, { cmd: 'start', model: 'm', wait: true }, { timeoutMs: 60000 });
            await waitFor(() => readyAt.has('m') && fs.existsSync(stamp), {
                timeoutMs: 5000,
                what: "m's ready event and the engine's stamp",
            });
            const engineNs = Number(fs.readFileSync(stamp, 'utf8').trim());
            ready.push((readyAt.get('m') - engineNs) / 1e6);
            starts.push((readyAt.get('m') - ts) / 1e6);
            log(`slurm start ${i + 1}: engine ready -> yard ready ${round(ready[i])} ms (start -> ready ${round(starts[i])} ms)`);
            await admin(y.stateDir, { cmd: 'stop', model: 'm' }, { timeoutMs: 60000 });
        }

        // the renewal: the first job ready, a steady client, the replacement's takeover
        const first = await timedRequest(y.port, 'POST', '/v1/chat/completions', CHAT, { timeoutMs: 60000 });
        if (first.status !== 200) throw new Error(`w's first request: ${first.status} ${first.body.slice(0, 200)}`);
        const job1 = String((await ps(y.stateDir)).find((x) => x.name === 'w').pid);
        const tr = monoNs();
        const c = steadyClient(y.port);
        try {
            await waitFor(() => takeover.at, { timeoutMs: 90000, intervalMs: 100, what: 'the replacement job taking over' });
            const until = Date.now() + 3000;
            await waitFor(() => Date.now() > until, { timeoutMs: 5000, intervalMs: 100, what: '3 s of the replacement' });
        } finally {
            await c.stop();
        }
        const job2 = String((await ps(y.stateDir)).find((x) => x.name === 'w').pid);
        const renewal = {
            requests: c.requests,
            failed: c.failed,
            errors: c.errors,
            job_replaced: job1,
            job_replacement: job2,
            takeover_s: round((takeover.at - tr) / 1e9, 1),
            event: takeover.reason,
        };
        log(
            `slurm renewal: job ${job2} took over from ${job1} ${renewal.takeover_s} s after the client started; ` +
                `${c.requests} requests, ${c.failed} failed${c.errors.length ? ': ' + c.errors[0] : ''}`
        );
        await admin(y.stateDir, { cmd: 'stop', model: 'w' }, { timeoutMs: 60000 });

        const out = { rounds: p.rounds, poll: '10s', renewal_poll: '1s', cluster_start_ms: round(clusterMs, 0) };
        put(out, 'ready_ms', summary(ready));
        put(out, 'start_ready_ms', summary(starts));
        out.renewal = renewal;
        return out;
    } finally {
        if (ev) ev.close();
        if (y) await y.proc.stop();
        await s.stop();
        for (const [k, v] of Object.entries(saved)) {
            if (v === undefined) delete process.env[k];
            else process.env[k] = v;
        }
    }
}
