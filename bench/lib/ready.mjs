// Section "ready": how long after an engine becomes ready yard says `ready`.
// The mock engine writes CLOCK_MONOTONIC ns at its instant of readiness
// (--ready-stamp); yard's `ready` is the instant its state event reaches an
// `events` follower on the admin socket (this process, same clock). Starts
// alternate between the three flavors, whose readiness differs.
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir, startYard, admin, followEvents, mockCmd, summary, percentile, round, log, waitFor } from './util.mjs';

const FLAVORS = ['vllm', 'sglang', 'llamacpp'];

export async function runReady(p) {
    const dir = tmpdir('yb-stamps-');
    const models = {};
    for (const f of FLAVORS) {
        const stamp = path.join(dir, `${f}.ready`);
        const extra = `--load-time ${p.loadMs}ms --warmup-time 100ms --ready-stamp ${stamp}`;
        models[`r-${f}`] = { engine: f, cmd: mockCmd(f, extra), stamp };
    }
    const y = await startYard({
        models: Object.fromEntries(Object.entries(models).map(([k, v]) => [k, { engine: v.engine, cmd: v.cmd }])),
    });
    const readyAt = new Map(); // model -> arrival ns of its latest `ready` event
    const ev = followEvents(y.stateDir, (e, at) => {
        if (e.to === 'ready') readyAt.set(e.model, at);
    });
    await new Promise((r) => setTimeout(r, 200));

    const samples = Object.fromEntries(FLAVORS.map((f) => [f, []]));
    for (let i = 0; i < p.starts; i++) {
        for (const f of FLAVORS) {
            const name = `r-${f}`;
            const m = models[name];
            fs.rmSync(m.stamp, { force: true });
            readyAt.delete(name);
            await admin(y.stateDir, { cmd: 'start', model: name, wait: true }, { timeoutMs: 30000 });
            await waitFor(() => readyAt.has(name) && fs.existsSync(m.stamp), {
                timeoutMs: 5000,
                intervalMs: 5,
                what: `the ready event and stamp of ${name}`,
            });
            const engineNs = Number(fs.readFileSync(m.stamp, 'utf8').trim());
            samples[f].push((readyAt.get(name) - engineNs) / 1e6);
            await admin(y.stateDir, { cmd: 'stop', model: name }, { timeoutMs: 30000 });
        }
        if ((i + 1) % 10 === 0 || i + 1 === p.starts)
            log(
                `ready ${i + 1}/${p.starts}: ` +
                    FLAVORS.map((f) => `${f} p50 ${round(percentile(samples[f], 50), 2)} ms`).join(', ')
            );
    }
    ev.close();
    await y.proc.stop();

    const all = FLAVORS.flatMap((f) => samples[f]);
    const s = summary(all);
    const out = {
        p50: round(s.median, 2),
        p99: round(percentile(all, 99), 2),
        min: round(s.min, 2),
        max: round(s.max, 2),
        starts: all.length,
        load_ms: p.loadMs,
        by_flavor: {},
    };
    for (const f of FLAVORS) {
        const t = summary(samples[f]);
        out.by_flavor[f] = {
            p50: round(t.median, 2),
            p99: round(percentile(samples[f], 99), 2),
            min: round(t.min, 2),
            max: round(t.max, 2),
            starts: t.n,
        };
    }
    return out;
}
