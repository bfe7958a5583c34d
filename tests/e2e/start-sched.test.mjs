// Hand starts and wakes go through the scheduler: `yard start B` and `yard wake B`
// are a demand for B like a request with no body, so exclusive groups, GPU memory,
// pins and router.policy hold for them as they hold for requests. The model in
// B's way is drained (its requests in flight finish) and stopped or put to sleep
// per its eviction policy before B starts or wakes.
//
// Config keys these tests use:
//   groups.NAME.exclusive, groups.NAME.members   at most one member loaded
//   gpus: [{index, name, memory}], models.NAME.vram, gpu_ledger   placement by memory
//   models.NAME.eviction: { weights: offload }   the evicted model sleeps instead of stopping
//   router.policy: time_slice                    a busy model is never preempted by requests
// Admin: yard start NAME [--wait], yard wake NAME, yard pin NAME, yard sleep NAME.

import path from 'node:path';
import { test } from 'node:test';
import { assert, MOCK_ENGINE_BIN, httpPost, ps, tmpdir, waitFor, waitState, yard } from './lib/harness.mjs';
import {
    routerDaemon,
    mockCmd,
    mockText,
    chatBody,
    chatStreamText,
    openStream,
    events,
    yardOk,
} from './lib/router-helpers.mjs';

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);
const chat = (y, model, opts) => httpPost(`${y.base}/v1/chat/completions`, chatBody(model, opts));
const pair = { pair: { exclusive: true, members: ['a', 'b'] } };

/** Index of the first event at or after `from` that matches pred. */
const indexOf = (evs, pred, from = 0) => {
    for (let i = from; i < evs.length; i++) if (pred(evs[i])) return i;
    return -1;
};
const show = (evs) => evs.map((e) => `${e.model}:${e.from}->${e.to}`).join(' ');

/** Asserts that `a` left ready (after index `after`) before `b` arrived at state `to` from `from`. */
function assertLeftBefore(evs, after, bFrom, bTo) {
    const aLeft = indexOf(evs, (e) => e.model === 'a' && e.from === 'ready', after);
    const bCame = indexOf(evs, (e) => e.model === 'b' && e.to === bTo && (!bFrom || e.from === bFrom), after);
    assert.ok(aLeft >= 0, `a never left ready: ${show(evs.slice(after))}`);
    assert.ok(bCame >= 0, `b never went to ${bTo}: ${show(evs.slice(after))}`);
    assert.ok(aLeft < bCame, `b went to ${bTo} while a was still ready: ${show(evs.slice(after))}`);
}

test('exclusive group: yard start B --wait with A ready stops A first, then B is ready', async () => {
    const y = await routerDaemon({
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
        },
        groups: pair,
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    const mark = (await events(y.dir)).length;

    const r = await yard(['start', 'b', '--wait'], { stateDir: y.dir });
    assert.equal(r.code, 0, `start b --wait: ${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /'b' is ready/);
    assert.equal((await entry(y.dir, 'b')).state, 'ready');
    assert.equal((await entry(y.dir, 'a')).state, 'stopped', 'both members of an exclusive group loaded');
    assertLeftBefore(await events(y.dir), mark, null, 'starting');

    // Without --wait the start is a demand that stands: a goes the same way.
    const mark2 = (await events(y.dir)).length;
    const r2 = await yard(['start', 'a'], { stateDir: y.dir });
    assert.equal(r2.code, 0, r2.stderr);
    await waitState(y.dir, 'a', 'ready');
    assert.equal((await entry(y.dir, 'b')).state, 'stopped');
    const evs = await events(y.dir);
    const bLeft = indexOf(evs, (e) => e.model === 'b' && e.from === 'ready', mark2);
    const aCame = indexOf(evs, (e) => e.model === 'a' && e.to === 'starting', mark2);
    assert.ok(bLeft >= 0 && aCame > bLeft, `a started while b was ready: ${show(evs.slice(mark2))}`);
    await y.d.stop();
});

test('exclusive group: an evicted model that sleeps in place is put to sleep by a hand start', async () => {
    const y = await routerDaemon({
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms'), eviction: { weights: 'offload' } },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
        },
        groups: pair,
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    const pid = (await entry(y.dir, 'a')).pid;
    await yardOk(y.dir, ['start', 'b', '--wait']);
    const a = await entry(y.dir, 'a');
    assert.equal(a.state, 'sleeping');
    assert.equal(a.pid, pid);
    assert.equal((await entry(y.dir, 'b')).state, 'ready');
    await y.d.stop();
});

test('exclusive group: yard wake B with A ready drains A first, then B is ready', async () => {
    const y = await routerDaemon({
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms'), eviction: { weights: 'offload' } },
        },
        groups: pair,
    });
    await yardOk(y.dir, ['start', 'b', '--wait']);
    await yardOk(y.dir, ['sleep', 'b']);
    assert.equal((await entry(y.dir, 'b')).state, 'sleeping');
    await yardOk(y.dir, ['start', 'a', '--wait']);
    assert.equal((await entry(y.dir, 'a')).state, 'ready');
    const mark = (await events(y.dir)).length;

    const r = await yard(['wake', 'b'], { stateDir: y.dir });
    assert.equal(r.code, 0, `wake b: ${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, "'b' is ready\n");
    assert.equal((await entry(y.dir, 'b')).state, 'ready');
    assert.equal((await entry(y.dir, 'a')).state, 'stopped', 'both members of an exclusive group loaded');
    assertLeftBefore(await events(y.dir), mark, 'sleeping', 'ready');
    await y.d.stop();
});

test('memory: two models that each need most of the one GPU; yard start B evicts A', async () => {
    const dir = tmpdir();
    const ledger = path.join(dir, 'gpu.ledger');
    const cmd = `${MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} --vram 30GiB --ledger ${ledger} --load-time 100ms`;
    const y = await routerDaemon({
        dir,
        top: `gpu_ledger: ${ledger}\ngpus:\n  - { index: 0, name: "GPU 0", memory: 40GiB }\n`,
        models: {
            a: { engine: 'vllm', vram: '30GiB', gpus: 1, cmd },
            b: { engine: 'vllm', vram: '30GiB', gpus: 1, cmd },
        },
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    const mark = (await events(y.dir)).length;
    const r = await yard(['start', 'b', '--wait'], { stateDir: y.dir });
    assert.equal(r.code, 0, `start b --wait: ${r.stdout}${r.stderr}`);
    assert.equal((await entry(y.dir, 'b')).state, 'ready');
    assert.equal((await entry(y.dir, 'a')).state, 'stopped', 'two 30GiB models on one 40GiB GPU');
    assertLeftBefore(await events(y.dir), mark, null, 'starting');
    await y.d.stop();
});

test('a request for A in flight while yard start B runs completes with 200', async () => {
    const y = await routerDaemon({
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms --tokens-per-sec 20') },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
        },
        groups: pair,
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    const s = await openStream(`${y.base}/v1/chat/completions`, chatBody('a', { stream: true, max_tokens: 30 }));
    assert.equal(s.status, 200);
    await s.waitFor((text) => text.includes('tok0'), 10000);

    const mark = (await events(y.dir)).length;
    const start = yard(['start', 'b', '--wait'], { stateDir: y.dir });
    const done = await s.done;
    assert.ok(done.complete, `a's stream was cut: ${done.text}`);
    assert.equal(chatStreamText(s.events()), mockText(30));
    const r = await start;
    assert.equal(r.code, 0, `start b --wait: ${r.stdout}${r.stderr}`);
    assert.equal((await entry(y.dir, 'b')).state, 'ready');
    assert.equal((await entry(y.dir, 'a')).state, 'stopped');
    assertLeftBefore(await events(y.dir), mark, null, 'starting');
    await y.d.stop();
});

test('a pinned A in the way: yard start B is refused at once with what to do', async () => {
    const y = await routerDaemon({
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
        },
        groups: pair,
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    await yardOk(y.dir, ['pin', 'a']);
    for (const args of [['start', 'b'], ['start', 'b', '--wait']]) {
        const r = await yard(args, { stateDir: y.dir, timeoutMs: 20000 });
        assert.equal(r.code, 1, `yard ${args.join(' ')}: ${r.stdout}${r.stderr}`);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, r.stderr);
        assert.match(lines[0], /cannot start 'b': .*pinned.*'a'/);
        assert.match(lines[0], /yard unpin a/);
        assert.match(lines[0], /yard stop a/);
    }
    assert.equal((await entry(y.dir, 'a')).state, 'ready');
    assert.equal((await entry(y.dir, 'b')).state, 'stopped');
    // Unpinned, the same start goes through.
    await yardOk(y.dir, ['unpin', 'a']);
    await yardOk(y.dir, ['start', 'b', '--wait']);
    assert.equal((await entry(y.dir, 'a')).state, 'stopped');
    await y.d.stop();
});

test('time_slice: a hand start is not held back by a model that stays busy', async () => {
    const y = await routerDaemon({
        router: { policy: 'time_slice', max_wait: '120s' },
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms --tokens-per-sec 200'), concurrency: 1 },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
        },
        groups: pair,
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    // Two clients keep a busy: one request in flight, one queued, all the time.
    let running = true;
    const results = [];
    const client = async () => {
        while (running) results.push(await chat(y, 'a', { max_tokens: 5 }));
    };
    const clients = [client(), client()];
    await waitFor(() => results.length >= 2, { timeoutMs: 20000, what: 'a serving its clients' });
    const mark = (await events(y.dir)).length;

    const r = await yard(['start', 'b', '--wait'], { stateDir: y.dir, timeoutMs: 60000 });
    running = false;
    await Promise.all(clients);
    assert.equal(r.code, 0, `start b --wait under time_slice: ${r.stdout}${r.stderr}`);
    for (const res of results) {
        assert.equal(res.status, 200, res.body);
        assert.equal(JSON.parse(res.body).choices[0].message.content, mockText(5));
    }
    assertLeftBefore(await events(y.dir), mark, null, 'starting');
    await y.d.stop();
});

test('yard ps: TTL shows the time an idle model has left, or pinned; --json has ttl_left_s, pinned, replica', async () => {
    const y = await routerDaemon({
        models: { a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms'), ttl: '10m' } },
    });
    const stopped = await entry(y.dir, 'a');
    assert.equal(stopped.ttl_left_s, null, JSON.stringify(stopped));
    assert.equal(stopped.pinned, false);
    assert.equal(stopped.replica, 0);

    await yardOk(y.dir, ['start', 'a', '--wait']);
    const idle = await entry(y.dir, 'a');
    assert.ok(idle.ttl_left_s > 0 && idle.ttl_left_s <= 600, JSON.stringify(idle));
    let table = await yard(['ps'], { stateDir: y.dir });
    assert.match(table.stdout, /^a\s+vllm\s+local\s+0\s+ready\s+\d+\s+\d+\s+-\s+\S+\s+(10m0s|9m\d+s)\s+-\s*$/m, table.stdout);

    await yardOk(y.dir, ['pin', 'a']);
    const pinned = await entry(y.dir, 'a');
    assert.equal(pinned.pinned, true);
    assert.equal(pinned.ttl_left_s, null, 'a pinned model has no ttl running');
    table = await yard(['ps'], { stateDir: y.dir });
    assert.match(table.stdout, /^a\s+vllm\s+local\s+0\s+ready\s+\d+\s+\d+\s+-\s+\S+\s+pinned\s+-\s*$/m, table.stdout);
    await y.d.stop();
});
