// Swapping and admission: an exclusive group under interleaved concurrent load
// (collated, few swaps, never two members loaded), queue and wait caps, per-model
// concurrency, ttl, pin/unpin, stop that drains, and max_loaded with LRU.
//
// Config keys these tests use:
//   router.max_queue       requests waiting per model; past it: 503 + Retry-After
//   router.max_wait        how long a request may wait for its model; past it: 503 + Retry-After
//   router.max_loaded      models loaded at once; the least recently used idle one goes
//   router.max_body, router.header_timeout, router.idle_timeout   (http-limits.test.mjs)
//   groups.NAME.exclusive, groups.NAME.members                      at most one member loaded
//   models.NAME.concurrency   requests in flight at the engine at once; more wait, none refused
//   models.NAME.ttl           idle time before the model is stopped
//   models.NAME.aliases       other names for the model
//   api_keys                  Bearer (or x-api-key) auth on /v1/* and /upstream/
// Admin: yard pin NAME / yard unpin NAME (kept loaded against ttl and eviction,
// recorded in the state database so a restarted daemon keeps them),
// yard stop NAME (drains requests in flight first).

import fs from 'node:fs';
import { test } from 'node:test';
import { assert, httpPost, parseSSE, ps, startDaemon, waitFor, waitState, yard } from './lib/harness.mjs';
import {
    METRICS,
    routerDaemon,
    mockCmd,
    mockText,
    chatBody,
    chatStreamText,
    assertOpenAIError,
    openStream,
    withTimeout,
    getMetrics,
    sampleSum,
    parseMetrics,
    events,
    engineLog,
    yardOk,
    tcpAccepts,
} from './lib/router-helpers.mjs';

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);
const chat = (y, model, opts) => httpPost(`${y.base}/v1/chat/completions`, chatBody(model, opts));
const LOADED = new Set(['starting', 'ready', 'sleeping', 'stopping']);

test('exclusive group: 40 interleaved requests all succeed, one member loaded at a time, <= 4 swaps', async () => {
    const y = await routerDaemon({
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 300ms --tokens-per-sec 200') },
            b: { engine: 'sglang', cmd: mockCmd('sglang', '--load-time 300ms --tokens-per-sec 200') },
        },
        groups: { pair: { exclusive: true, members: ['a', 'b'] } },
    });

    // Watch yard ps while the requests run: a member with a process (starting,
    // ready, stopping) holds GPU memory, so two of them at once is a violation.
    let running = true;
    const violations = [];
    let polls = 0;
    const watcher = (async () => {
        while (running) {
            const list = await ps(y.dir);
            polls++;
            const loaded = list.filter((e) => ['a', 'b'].includes(e.name) && LOADED.has(e.state));
            if (loaded.length > 1) violations.push(loaded.map((e) => `${e.name}:${e.state}`).join(' '));
        }
    })();

    const names = Array.from({ length: 40 }, (_, i) => (i % 2 ? 'b' : 'a'));
    const results = await Promise.all(names.map((m) => chat(y, m, { max_tokens: 6 })));
    running = false;
    await watcher;

    results.forEach((r, i) => {
        assert.equal(r.status, 200, `request ${i} (${names[i]}): ${r.status} ${r.body}`);
        const o = JSON.parse(r.body);
        assert.equal(o.model, names[i], `request ${i} for ${names[i]} answered by ${o.model}`);
        assert.equal(o.choices[0].message.content, mockText(6));
    });
    assert.ok(polls > 0);
    assert.deepEqual(violations, [], 'both members loaded at once');

    // Collation: A B A B ... is served as runs, not one swap per request.
    const starts = (await events(y.dir)).filter((e) => ['a', 'b'].includes(e.model) && e.to === 'starting');
    assert.ok(starts.length >= 2, `both members must have started: ${JSON.stringify(starts)}`);
    const order = starts.map((e) => e.model).join(' ');
    assert.ok(starts.length - 1 <= 4, `${starts.length - 1} swaps for 40 requests: ${order}`);
    const swaps = sampleSum((await getMetrics(y.base)).all, METRICS.swaps);
    assert.ok(swaps !== null, `no ${METRICS.swaps} in /metrics`);
    assert.ok(swaps >= 1 && swaps <= 4, `${METRICS.swaps} = ${swaps}`);
    await y.d.stop();
});

test('router.max_queue: a full queue answers 503 with Retry-After at once', async () => {
    const y = await routerDaemon({
        router: { max_queue: 2 },
        models: { slow: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 3s --tokens-per-sec 500') } },
    });
    const order = [];
    const reqs = Array.from({ length: 5 }, () =>
        chat(y, 'slow', { max_tokens: 2 }).then((r) => {
            order.push(r.status);
            return r;
        })
    );
    const results = await Promise.all(reqs);
    const ok = results.filter((r) => r.status === 200);
    const full = results.filter((r) => r.status === 503);
    assert.equal(ok.length, 2, `statuses: ${results.map((r) => r.status)}`);
    assert.equal(full.length, 3, `statuses: ${results.map((r) => r.status)}`);
    for (const r of full) {
        assert.match(String(r.headers['retry-after']), /^\d+$/, `Retry-After: ${r.headers['retry-after']}`);
        assertOpenAIError(r.body, '503 queue full');
    }
    // The refusals did not wait for the load.
    assert.deepEqual(order, [503, 503, 503, 200, 200]);
    for (const r of ok) assert.equal(JSON.parse(r.body).choices[0].message.content, mockText(2));
    await y.d.stop();
});

test('router.max_wait: a request that waits longer than max_wait gets 503 with Retry-After', async () => {
    const y = await routerDaemon({
        router: { max_wait: '1s' },
        models: { slow: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 3s --tokens-per-sec 500') } },
    });
    const r = await chat(y, 'slow', { max_tokens: 2 });
    assert.equal(r.status, 503, r.body);
    assert.match(String(r.headers['retry-after']), /^\d+$/, `Retry-After: ${r.headers['retry-after']}`);
    assertOpenAIError(r.body, '503 max_wait');
    // Once the model is ready, requests are served.
    await yardOk(y.dir, ['start', 'slow', '--wait']);
    const again = await chat(y, 'slow', { max_tokens: 2 });
    assert.equal(again.status, 200, again.body);
    await y.d.stop();
});

test('concurrency: 1: three concurrent streams all succeed, one at a time at the engine', async () => {
    const y = await routerDaemon({
        models: {
            one: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms --tokens-per-sec 10'), concurrency: 1 },
        },
    });
    await yardOk(y.dir, ['start', 'one', '--wait']);
    const { port } = await entry(y.dir, 'one');

    // The engine's own gauge of requests in generation, polled throughout.
    let running = true;
    let maxRunning = 0;
    let polls = 0;
    const poller = (async () => {
        while (running) {
            try {
                const r = await fetch(`http://127.0.0.1:${port}/metrics`);
                const n = sampleSum(parseMetrics(await r.text()), 'vllm:num_requests_running');
                if (n !== null) {
                    maxRunning = Math.max(maxRunning, n);
                    polls++;
                }
            } catch {
                // engine busy or restarting: try again
            }
            await new Promise((res) => setTimeout(res, 10));
        }
    })();

    const one = async () => {
        const body = chatBody('one', { stream: true, max_tokens: 5 });
        const s = await openStream(`${y.base}/v1/chat/completions`, body);
        const firstToken = await s.waitFor((_, ev) => chatStreamText(ev).includes('tok0 ') && Date.now(), 30000);
        const done = await withTimeout(s.done, 30000);
        return { status: s.status, firstToken, end: Date.now(), done };
    };
    const streams = await Promise.all([one(), one(), one()]);
    running = false;
    await poller;

    for (const s of streams) {
        assert.equal(s.status, 200);
        assert.ok(s.done && s.done.complete, `a stream did not finish: ${s.done && s.done.text}`);
        assert.equal(chatStreamText(parseSSE(s.done.text)), mockText(5));
    }
    assert.ok(polls > 0, 'never read the engine metrics');
    assert.ok(maxRunning <= 1, `${maxRunning} requests in flight at the engine with concurrency 1`);
    // Seen from the clients: each stream's first token comes after the previous one
    // ended (the engine sends a stream's first token 100 ms after it starts it).
    const byStart = [...streams].sort((p, q) => p.firstToken - q.firstToken);
    for (let i = 1; i < byStart.length; i++) {
        assert.ok(
            byStart[i].firstToken >= byStart[i - 1].end,
            `stream ${i} began (${byStart[i].firstToken}) before stream ${i - 1} ended (${byStart[i - 1].end})`
        );
    }
    await y.d.stop();
});

test('ttl: an idle model is stopped', async () => {
    const y = await routerDaemon({
        models: { t: { engine: 'llamacpp', cmd: mockCmd('llamacpp', '--load-time 200ms'), ttl: '1s' } },
    });
    const r = await chat(y, 't', { max_tokens: 2 });
    assert.equal(r.status, 200, r.body);
    await waitState(y.dir, 't', 'stopped', 8000);
    // And it comes back on demand.
    const again = await chat(y, 't', { max_tokens: 2 });
    assert.equal(again.status, 200, again.body);
    await y.d.stop();
});

test('pin keeps a model loaded past its ttl; unpin lets it go', async () => {
    const y = await routerDaemon({
        models: {
            pinned: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms'), ttl: '2s' },
            loose: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms'), ttl: '2s' },
        },
    });
    assert.equal((await chat(y, 'pinned', { max_tokens: 1 })).status, 200);
    await yardOk(y.dir, ['pin', 'pinned']);
    // Used after `pinned`, with the same ttl: once it is gone, pinned's ttl has passed too.
    assert.equal((await chat(y, 'loose', { max_tokens: 1 })).status, 200);
    await waitState(y.dir, 'loose', 'stopped', 10000);
    assert.equal((await entry(y.dir, 'pinned')).state, 'ready', 'a pinned model was unloaded by ttl');

    await yardOk(y.dir, ['unpin', 'pinned']);
    await waitState(y.dir, 'pinned', 'stopped', 10000);

    const bad = await yard(['pin', 'nope'], { stateDir: y.dir });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /unknown model 'nope'/);
    await y.d.stop();
});

test('a pin survives a daemon restart, and so does an unpin; a pin outlives its model', async () => {
    const y = await routerDaemon({
        models: {
            pinned: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms'), ttl: '2s' },
            loose: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms'), ttl: '2s' },
        },
    });
    const restart = async (d) => {
        await d.stop();
        const next = await startDaemon({ config: y.config, stateDir: y.dir });
        await waitFor(() => tcpAccepts(y.port), { timeoutMs: 5000, what: `yard listening on ${y.base}` });
        return next;
    };
    const pinnedGauge = async (model) => sampleSum((await getMetrics(y.base)).all, 'yard_pinned', { model });

    await yardOk(y.dir, ['pin', 'pinned']);
    let d = await restart(y.d);
    assert.equal(await pinnedGauge('pinned'), 1, 'the pin was lost in the restart');
    assert.equal(await pinnedGauge('loose'), 0);
    // And it acts as a pin: past its ttl, the model stays loaded.
    assert.equal((await chat(y, 'pinned', { max_tokens: 1 })).status, 200);
    assert.equal((await chat(y, 'loose', { max_tokens: 1 })).status, 200);
    await waitState(y.dir, 'loose', 'stopped', 10000);
    assert.equal((await entry(y.dir, 'pinned')).state, 'ready', 'a restored pin did not hold against ttl');

    await yardOk(y.dir, ['unpin', 'pinned']);
    d = await restart(d);
    assert.equal(await pinnedGauge('pinned'), 0, 'the unpin was lost in the restart');

    // A pin stays recorded while its model is out of the config; it is back with the model.
    await yardOk(y.dir, ['pin', 'pinned']);
    const full = fs.readFileSync(y.config, 'utf8');
    fs.writeFileSync(y.config, full.replace(/^  pinned: .*\n/m, ''));
    d = await restart(d);
    assert.equal(await pinnedGauge('pinned'), null, 'a removed model still has a queue');
    fs.writeFileSync(y.config, full);
    d = await restart(d);
    assert.equal(await pinnedGauge('pinned'), 1, 'the pin did not come back with its model');
    await d.stop();
});

test('yard stop while a request streams: the stream completes, then the model stops', async () => {
    const y = await routerDaemon({
        models: { d: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms --tokens-per-sec 20') } },
    });
    await yardOk(y.dir, ['start', 'd', '--wait']);
    const s = await openStream(`${y.base}/v1/chat/completions`, chatBody('d', { stream: true, max_tokens: 20 }));
    await s.waitFor((_, ev) => chatStreamText(ev).includes('tok0 '), 10000);
    const stop = yard(['stop', 'd'], { stateDir: y.dir });
    const done = await withTimeout(s.done, 20000);
    assert.ok(done, 'stream did not end');
    assert.ok(done.complete, `stream cut: ${done.text}`);
    const ev = parseSSE(done.text);
    assert.equal(chatStreamText(ev), mockText(20));
    assert.equal(ev[ev.length - 1].data, '[DONE]');
    const r = await stop;
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await entry(y.dir, 'd')).state, 'stopped');
    assert.doesNotMatch(await engineLog(y.dir, 'd'), /request cancelled/);
    await y.d.stop();
});

test('router.max_loaded: 1: starting b stops a', async () => {
    const y = await routerDaemon({
        router: { max_loaded: 1 },
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms') },
            b: { engine: 'llamacpp', cmd: mockCmd('llamacpp', '--load-time 200ms') },
        },
    });
    assert.equal((await chat(y, 'a', { max_tokens: 1 })).status, 200);
    assert.equal((await entry(y.dir, 'a')).state, 'ready');
    assert.equal((await chat(y, 'b', { max_tokens: 1 })).status, 200);
    assert.equal((await entry(y.dir, 'b')).state, 'ready');
    assert.equal((await entry(y.dir, 'a')).state, 'stopped');
    await y.d.stop();
});

test('router.max_loaded: 2: the least recently used idle model is the one stopped', async () => {
    const y = await routerDaemon({
        router: { max_loaded: 2 },
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms') },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms') },
            c: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 200ms') },
        },
    });
    for (const m of ['a', 'b', 'a']) assert.equal((await chat(y, m, { max_tokens: 1 })).status, 200);
    // b is now the least recently used.
    assert.equal((await chat(y, 'c', { max_tokens: 1 })).status, 200);
    const st = Object.fromEntries((await ps(y.dir)).map((e) => [e.name, e.state]));
    assert.deepEqual(st, { a: 'ready', b: 'stopped', c: 'ready' });
    await y.d.stop();
});
