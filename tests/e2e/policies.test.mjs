// Switch policies (router.policy) on one scripted arrival pattern, against the
// real daemon: two models in an exclusive group (one loaded at a time); model a
// is kept busy by four client loops for PATTERN_MS; model b gets one request
// every B_EVERY_MS, B_COUNT in all. The switches are counted from `yard events`
// (b's starts during the pattern).
//
//   fifo        switches as soon as b's request is the oldest waiting: b comes
//               and goes more than once while a is busy. Here b sends its next
//               request only once a was served again after b's last answer, so
//               how long a switch takes on a slow machine changes nothing
//   cost_aware  batches: with router.amortization too high to be met, b waits
//               for router.coalesce_window, then one switch serves every b
//               request, while a is still busy
//   time_slice  never preempts: b is served once a has nothing in flight or
//               queued, after the pattern, in one switch
//
// The decision rules themselves are covered exactly by tests/unit/test_sched_policy.c
// (a simulated clock); this file checks the daemon applies them.

import { test } from 'node:test';
import { assert, httpPost, sleep, waitFor } from './lib/harness.mjs';
import { routerDaemon, mockCmd, mockText, chatBody, events, getMetrics, samples } from './lib/router-helpers.mjs';

const PATTERN_MS = 5000;
const B_EVERY_MS = 500;
const B_COUNT = 4;
const A_LOOPS = 4;

const chat = (y, model, opts) => httpPost(`${y.base}/v1/chat/completions`, chatBody(model, opts));

async function runPattern(router, { bAfterA = false } = {}) {
    const y = await routerDaemon({
        router: { max_wait: '120s', ...router },
        models: {
            // concurrency 2 under four loops: a always has requests queued at yard, so
            // it never looks idle, even when the test's own event loop lags.
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 400ms --tokens-per-sec 100'), concurrency: 2 },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 400ms --tokens-per-sec 100') },
        },
        groups: { pair: { exclusive: true, members: ['a', 'b'] } },
    });
    // Both models loaded once (b, then a: one measured switch), so the pattern starts on a.
    for (const m of ['b', 'a']) {
        const r = await chat(y, m, { max_tokens: 2 });
        assert.equal(r.status, 200, `priming ${m}: ${r.body}`);
    }
    const startWall = Date.now();
    const t0 = performance.now();
    const at = () => performance.now() - t0;
    let stop = false;
    let aServed = 0;
    const loops = Array.from({ length: A_LOOPS }, async (_, k) => {
        await sleep(k * 25);
        while (!stop) {
            const r = await chat(y, 'a', { max_tokens: 10 });
            assert.equal(r.status, 200, `a: ${r.body}`);
            assert.equal(JSON.parse(r.body).choices[0].message.content, mockText(10));
            aServed++;
        }
    });
    const bSent = [];
    const bDone = [];
    const bReqs = [];
    for (let i = 0; i < B_COUNT; i++) {
        if (bAfterA && i > 0) {
            // b's last request was answered; a has the GPU back once it serves again.
            await bReqs[i - 1];
            const served = aServed;
            await waitFor(() => aServed > served, { timeoutMs: 60000, what: 'a served again after b' });
        } else {
            await sleep(Math.max(0, (i + 1) * B_EVERY_MS - at()));
        }
        bSent.push(at());
        bReqs.push(
            chat(y, 'b', { max_tokens: 2 }).then((r) => {
                bDone.push(at());
                return r;
            })
        );
    }
    if (bAfterA) await Promise.all(bReqs);
    await sleep(Math.max(0, PATTERN_MS - at()));
    stop = true;
    const aEnd = at();
    await Promise.all(loops);
    for (const r of await Promise.all(bReqs)) {
        assert.equal(r.status, 200, `b: ${r.body}`);
        assert.equal(JSON.parse(r.body).model, 'b');
    }
    const evs = (await events(y.dir)).filter((e) => e.ts_ms >= startWall);
    const bStarts = evs.filter((e) => e.model === 'b' && e.to === 'starting').length;
    const metrics = await getMetrics(y.base);
    await y.d.stop();
    return { bStarts, bSent, bDone: bDone.sort((p, q) => p - q), aEnd, aServed, metrics, evs };
}

const fmt = (xs) => xs.map((x) => Math.round(x)).join(', ');

test('fifo: b takes the GPU whenever its request is the oldest waiting (several switches)', async () => {
    const r = await runPattern({ policy: 'fifo' }, { bAfterA: true });
    assert.ok(r.aServed > 0);
    // Each b request waited behind a's older ones only: one switch to b for each.
    assert.equal(
        r.bStarts,
        B_COUNT,
        `fifo switched to b ${r.bStarts} time(s); b sent at ${fmt(r.bSent)} ms, answered at ${fmt(r.bDone)} ms`
    );
});

test('cost_aware: b requests are batched into one switch while a is still busy', async () => {
    const r = await runPattern({ policy: 'cost_aware', amortization: 1000, coalesce_window: '2s' });
    const detail = `b sent at ${fmt(r.bSent)} ms, answered at ${fmt(r.bDone)} ms, a busy until ${Math.round(r.aEnd)} ms`;
    assert.equal(r.bStarts, 1, `cost_aware switched to b ${r.bStarts} times; ${detail}`);
    assert.ok(r.bDone[0] >= r.bSent[B_COUNT - 1], `b answered before its last request came: ${detail}`);
    assert.ok(r.bDone[0] < r.aEnd, `b waited for a to go idle (that is time_slice): ${detail}`);
    // The switches are measured per direction.
    const cost = samples(r.metrics.all, 'yard_switch_cost_seconds', { from: 'b', to: 'a' });
    assert.equal(cost.length, 1, 'yard_switch_cost_seconds{from="b",to="a"} missing');
    assert.ok(cost[0].value > 0, `switch cost ${cost[0].value}`);
    const ab = samples(r.metrics.all, 'yard_switches_total', { from: 'a', to: 'b' });
    assert.equal(ab.length, 1, 'yard_switches_total{from="a",to="b"} missing');
    assert.equal(ab[0].value, 1);
    // Each switch is an event with its phases.
    const sw = r.evs.filter((e) => e.model === 'b' && e.from === 'ready' && e.to === 'ready');
    assert.equal(sw.length, 1, JSON.stringify(r.evs));
    assert.match(sw[0].reason, /^switched from 'a' in [\d.]+ s: drain [\d.]+ s, stop [\d.]+ s, start [\d.]+ s$/);
});

test('time_slice: never preempts a busy model; b is served in one switch once a is idle', async () => {
    const r = await runPattern({ policy: 'time_slice' });
    const detail = `b sent at ${fmt(r.bSent)} ms, answered at ${fmt(r.bDone)} ms, a busy until ${Math.round(r.aEnd)} ms`;
    assert.equal(r.bStarts, 1, `time_slice switched to b ${r.bStarts} times; ${detail}`);
    assert.ok(r.bDone[0] >= r.aEnd, `b was served while a was busy: ${detail}`);
});
