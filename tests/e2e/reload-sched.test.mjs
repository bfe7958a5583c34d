// Reload goes through the scheduler (docs/sup.md, "Reload"): a model whose config
// changed while it runs is drained (its requests in flight finish), stopped with
// the reason "config changed: WHAT", then started again as a demand like
// `yard start`, so exclusive groups, GPU memory and pins hold for the new process.
//
// Config keys these tests use:
//   groups.NAME.exclusive, groups.NAME.members   at most one member loaded
//   models.NAME.eviction: { weights: offload }   the evicted model sleeps in place
// Admin: {"cmd":"reload"} (what SIGHUP does), yard start NAME --wait.
import fs from 'node:fs';
import { test } from 'node:test';
import { assert, adminResult, ps, waitFor } from './lib/harness.mjs';
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
const pair = { pair: { exclusive: true, members: ['a', 'b'] } };
const show = (evs) => evs.map((e) => `${e.model}:${e.from}->${e.to}`).join(' ');

/** Rewrites the daemon's config with `from` replaced by `to` and reloads it. */
async function reloadWith(y, from, to) {
    const text = fs.readFileSync(y.config, 'utf8');
    assert.ok(text.includes(from), `the config has no ${from}`);
    fs.writeFileSync(y.config, text.replace(from, to));
    return adminResult(y.dir, { cmd: 'reload' });
}

test('reload: a changed model asleep beside its exclusive partner comes back only after the partner gives way', async () => {
    const y = await routerDaemon({
        models: {
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms'), eviction: { weights: 'offload' } },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms'), eviction: { weights: 'offload' } },
        },
        groups: pair,
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    await yardOk(y.dir, ['start', 'b', '--wait']);
    assert.equal((await entry(y.dir, 'a')).state, 'sleeping');
    assert.equal((await entry(y.dir, 'b')).state, 'ready');
    const pidA = (await entry(y.dir, 'a')).pid;
    const mark = (await events(y.dir)).length;

    const res = await reloadWith(y, '--load-time 100ms"', '--load-time 100ms --dtype auto"');
    assert.deepEqual(res.restarted, ['a']);

    // a is stopped with its reason, then started again as a demand: b gives way first.
    await waitFor(async () => (await entry(y.dir, 'a')).state === 'ready' && (await entry(y.dir, 'a')).pid !== pidA, {
        what: 'a ready again in a new process',
        timeoutMs: 20000,
    });
    const b = await entry(y.dir, 'b');
    assert.notEqual(b.state, 'ready', 'both members of an exclusive group are loaded after the reload');
    const evs = (await events(y.dir)).slice(mark);
    const aStop = evs.find((e) => e.model === 'a' && e.to === 'stopping');
    assert.ok(aStop, show(evs));
    assert.equal(aStop.reason, 'config changed: cmd');
    const bLeft = evs.findIndex((e) => e.model === 'b' && e.from === 'ready');
    const aReady = evs.findIndex((e) => e.model === 'a' && e.to === 'ready');
    assert.ok(bLeft >= 0 && bLeft < aReady, `a served while b was ready: ${show(evs)}`);
    await y.d.stop();
});

test('reload: a changed model finishes its request in flight before it restarts', async () => {
    const y = await routerDaemon({
        models: { a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms --tokens-per-sec 20') } },
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    const pidA = (await entry(y.dir, 'a')).pid;
    const s = await openStream(`${y.base}/v1/chat/completions`, chatBody('a', { stream: true, max_tokens: 20 }));
    assert.equal(s.status, 200);
    await s.waitFor((text) => text.includes('tok0'), 10000);

    const res = await reloadWith(y, '--tokens-per-sec 20', '--tokens-per-sec 200');
    assert.deepEqual(res.restarted, ['a']);
    // Draining: the old engine still serves the stream, and runs until it ends.
    assert.equal((await entry(y.dir, 'a')).pid, pidA);

    const done = await s.done;
    assert.ok(done.complete, `a's stream was cut by the reload: ${done.text}`);
    assert.equal(chatStreamText(s.events()), mockText(20));
    await waitFor(async () => {
        const a = await entry(y.dir, 'a');
        return a.state === 'ready' && a.pid !== pidA;
    }, { what: 'a ready again in a new process', timeoutMs: 20000 });
    const evs = await events(y.dir, { model: 'a' });
    assert.ok(evs.some((e) => e.to === 'stopped' && e.reason === 'config changed: cmd'), show(evs));
    await y.d.stop();
});
