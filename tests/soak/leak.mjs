// Soak: file descriptors and RSS after many connections are back at their baseline.
//
// One daemon, one vLLM mock model, router.idle_timeout 1 s. The churn
// (lib/conns.mjs) opens N connections, 32 at a time, of every kind: a request
// then Connection: close, keep-alive reuse, idle ones closed by the client or by
// the server's idle timeout, connections cut in the head, in the body, mid-stream
// and while the answer is generated, and garbage (400).
//
// The baseline is read after a warm-up churn (N/10 connections, at least 200, the
// same mix: buffers and pools have grown to their working size) with the model
// stopped, because the upstream pool keeps up to 64 idle engine connections per
// engine and stopping the engine closes them (what is left is the daemon's own).
// After the churn the model is stopped again and:
//   - fds:  /proc/PID/fd count exactly the baseline, polled for up to 10 s
//   - RSS:  VmRSS at most baseline + max(1 MiB, 5%)
// A third check says every connection behaved (answers 200, idle ones closed by
// the server, garbage answered 400).

import * as h from '../e2e/lib/harness.mjs';
import { trackNeedle, trackPs } from './lib/cleanup.mjs';
import { fdCount, rssKiB, describeFds, clientConns, mib, settle } from './lib/common.mjs';
import { oneModelDaemon, startModel, stopModel, churn, tally } from './lib/conns.mjs';

const IDLE_TIMEOUT_MS = 1000;
const RSS_SLACK_KIB = 1024;
const RSS_SLACK_FRACTION = 0.05;

/** Reads fds until two readings 200 ms apart agree (or 5 s). */
async function steadyFds(pid) {
    let last = fdCount(pid);
    const deadline = Date.now() + 5000;
    for (;;) {
        await h.sleep(200);
        const now = fdCount(pid);
        if (now === last || Date.now() >= deadline) return now;
        last = now;
    }
}

export async function run(report, { connections }) {
    const y = await oneModelDaemon({
        router: { idle_timeout: `${IDLE_TIMEOUT_MS}ms`, max_connections: 4096 },
    });
    trackNeedle(y.dir);
    const pid = y.d.pid;
    const opts = { concurrency: 32, idleTimeoutMs: IDLE_TIMEOUT_MS };

    // Warm-up, then the baseline with the model stopped.
    await startModel(y.dir);
    trackPs(await h.ps(y.dir));
    const warm = await churn(y.port, Math.max(200, Math.floor(connections / 10)), opts);
    await stopModel(y.dir);
    const fd0 = await steadyFds(pid);
    const rss0 = rssKiB(pid);
    const fdsDesc0 = describeFds(pid, y.port);

    // The churn.
    await startModel(y.dir);
    trackPs(await h.ps(y.dir));
    let peakFd = 0;
    let peakRss = 0;
    const sample = () => {
        peakFd = Math.max(peakFd, fdCount(pid) || 0);
        peakRss = Math.max(peakRss, rssKiB(pid) || 0);
    };
    const c = await churn(y.port, connections, { ...opts, onSample: sample });
    const fdRunning = fdCount(pid);
    const held = (
        await settle(
            () => {
                const n = clientConns(pid, y.port);
                return { ok: n === 0, n };
            },
            { timeoutMs: 5000 }
        )
    ).n;
    await stopModel(y.dir);

    const fin = await settle(
        () => {
            const fd = fdCount(pid);
            return { ok: fd === fd0, fd };
        },
        { timeoutMs: 10000, intervalMs: 100 }
    );
    const rss1 = rssKiB(pid);
    const slack = Math.max(RSS_SLACK_KIB, Math.round(rss0 * RSS_SLACK_FRACTION));

    report.info(
        `leak: ${connections} connections in ${(c.ms / 1000).toFixed(1)} s ` +
            `(${Math.round((connections * 1000) / c.ms)}/s, 32 at a time; warm-up ${warm.ms} ms): ` +
            Object.entries(c.byKind)
                .map(([k, n]) => `${n} ${k}`)
                .join(', ')
    );
    report.info(`leak: daemon fds at baseline: ${fdsDesc0}`);
    report.check(
        `leak: fds back to baseline after ${connections} connections`,
        fin.ok && held === 0,
        `baseline ${fd0}, peak ${peakFd}, after the churn ${fdRunning} (model running; ` +
            `${held} client connections left), ` +
            `after stop ${fin.fd}` +
            (fin.ok ? '' : `; now: ${describeFds(pid, y.port)}`)
    );
    report.check(
        `leak: RSS back to baseline after ${connections} connections`,
        rss1 !== null && rss1 <= rss0 + slack,
        `baseline ${mib(rss0)}, peak ${mib(peakRss)}, after ${mib(rss1)} ` +
            `(${rss1 >= rss0 ? '+' : ''}${((rss1 - rss0) / 1024).toFixed(2)} MiB; allowed +${mib(slack)}: ` +
            `max(1 MiB, 5% of the baseline))`
    );
    const bad = [...c.problems, ...c.errors, ...warm.problems, ...warm.errors];
    report.check(
        'leak: every connection behaved (200s, idle ones closed by the server, 400 for garbage)',
        bad.length === 0,
        `${bad.length} of ${connections + Math.max(200, Math.floor(connections / 10))} misbehaved` +
            (bad.length ? `: ${tally(bad)}` : '')
    );
    await y.d.stop();
}
