// Section "switch": the cost of a swap beyond the engines' own work. Two
// vLLM mock models of 30 GiB on one declared 40 GiB GPU cannot both be
// loaded: `w` sleeps when evicted (eviction {weights: offload, process:
// keep_running}) and `s` stops. Each round asks for `s` (w sleeps, s cold
// starts) then for `w` (s stops, w wakes). The mocks log their lifecycle
// instants (--stamps: start, ready, sleep, asleep, wake, awake, stop), so
//
//   overhead = (first byte - request sent) - engine-side time on the path
//
// where the engine-side time is the new engine's load (start -> ready) or
// wake (wake -> awake), plus the evicted engine's own sleep (sleep ->
// asleep) when it sleeps. What is left is yard's: deciding, draining,
// signalling, noticing the exit, reading the GPU inventory, spawning,
// detecting readiness, the post-wake warm-up and forwarding.
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir, startYard, mockCmd, timedRequest, summary, put, round, log } from './util.mjs';

function readStamps(file) {
    if (!fs.existsSync(file)) return [];
    return fs
        .readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => {
            const [event, ns] = l.split(' ');
            return { event, ns: Number(ns) };
        });
}

/** The last `event` stamp at or after ns (null: none). */
function last(stamps, event, afterNs) {
    const s = stamps.filter((x) => x.event === event && x.ns >= afterNs);
    return s.length ? s[s.length - 1].ns : null;
}

export async function runSwitch(p) {
    const dir = tmpdir('yb-switch-');
    const ledger = path.join(dir, 'ledger');
    const stamps = { w: path.join(dir, 'w.stamps'), s: path.join(dir, 's.stamps') };
    const common = `--vram 30GiB --ledger ${ledger} --tokens-per-sec 0 --load-time ${p.loadMs}ms`;
    const y = await startYard({
        top:
            `gpus: ${JSON.stringify([{ index: 0, name: 'bench GPU 40G', memory: '40GiB' }])}\n` +
            `gpu_ledger: ${JSON.stringify(ledger)}\n`,
        models: {
            w: {
                engine: 'vllm',
                vram: '30GiB',
                gpus: 1,
                eviction: { weights: 'offload', process: 'keep_running' },
                cmd: mockCmd('vllm', `${common} --wake-time ${p.wakeMs}ms --stamps ${stamps.w}`),
            },
            s: {
                engine: 'vllm',
                vram: '30GiB',
                gpus: 1,
                cmd: mockCmd('vllm', `${common} --stamps ${stamps.s}`),
            },
        },
    });
    const ask = async (model) => {
        const r = await timedRequest(y.port, 'POST', '/v1/chat/completions', {
            model,
            max_tokens: 1,
            messages: [{ role: 'user', content: 'hi' }],
        });
        if (r.status !== 200) throw new Error(`switch to ${model}: status ${r.status}: ${r.body.slice(0, 300)}`);
        return r;
    };

    // cold start of w, nothing to evict
    const c = await ask('w');
    const ws = readStamps(stamps.w);
    const coldOwn = last(ws, 'ready', c.tSendNs) - last(ws, 'start', c.tSendNs);
    const cold = (c.tFirstByteNs - c.tSendNs - coldOwn) / 1e6;

    const restart = [];
    const wake = [];
    const detail = { restart: [], wake: [] };
    for (let r = 0; r < p.rounds; r++) {
        // s: w sleeps, s starts
        const a = await ask('s');
        let W = readStamps(stamps.w);
        let S = readStamps(stamps.s);
        const load = last(S, 'ready', a.tSendNs) - last(S, 'start', a.tSendNs);
        const slept = last(W, 'asleep', a.tSendNs) - last(W, 'sleep', a.tSendNs);
        const totalA = (a.tFirstByteNs - a.tSendNs) / 1e6;
        const ovA = totalA - (load + slept) / 1e6;
        restart.push(ovA);
        detail.restart.push({
            total_ms: round(totalA, 2),
            engine_load_ms: round(load / 1e6, 2),
            evicted_sleep_ms: round(slept / 1e6, 2),
            before_start_ms: round((last(S, 'start', a.tSendNs) - a.tSendNs - slept) / 1e6, 2),
            after_ready_ms: round((a.tFirstByteNs - last(S, 'ready', a.tSendNs)) / 1e6, 2),
        });

        // w: s stops, w wakes
        const b = await ask('w');
        W = readStamps(stamps.w);
        S = readStamps(stamps.s);
        const woke = last(W, 'awake', b.tSendNs) - last(W, 'wake', b.tSendNs);
        const totalB = (b.tFirstByteNs - b.tSendNs) / 1e6;
        const ovB = totalB - woke / 1e6;
        wake.push(ovB);
        detail.wake.push({
            total_ms: round(totalB, 2),
            engine_wake_ms: round(woke / 1e6, 2),
            stop_signal_ms: round((last(S, 'stop', b.tSendNs) - b.tSendNs) / 1e6, 2),
            before_wake_ms: round((last(W, 'wake', b.tSendNs) - b.tSendNs) / 1e6, 2),
            after_awake_ms: round((b.tFirstByteNs - last(W, 'awake', b.tSendNs)) / 1e6, 2),
        });
        log(
            `switch round ${r + 1}/${p.rounds}: restart overhead ${round(ovA, 1)} ms ` +
                `(total ${round(totalA, 1)}, load ${round(load / 1e6, 1)}, evicted sleep ${round(slept / 1e6, 1)}), ` +
                `wake overhead ${round(ovB, 1)} ms (total ${round(totalB, 1)}, wake ${round(woke / 1e6, 1)})`
        );
    }
    await y.proc.stop();

    const out = {};
    put(out, 'restart', summary(restart), 2);
    put(out, 'wake', summary(wake), 2);
    out.cold_start = round(cold, 2);
    out.rounds = p.rounds;
    out.load_ms = p.loadMs;
    out.wake_ms = p.wakeMs;
    const med = (arr, k) => round(summary(arr.map((x) => x[k])).median, 2);
    out.parts = {
        restart: Object.fromEntries(Object.keys(detail.restart[0]).map((k) => [k, med(detail.restart, k)])),
        wake: Object.fromEntries(Object.keys(detail.wake[0]).map((k) => [k, med(detail.wake, k)])),
    };
    return out;
}
