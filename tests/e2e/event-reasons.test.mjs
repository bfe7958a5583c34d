// Events carry their reason on every transition the scheduler asks for
// (docs/sched.md, "Every stop and sleep says why"): a ttl unload, an eviction
// for another model, `yard stop` (which says on stderr what it waits for while
// it drains), and a model removed by reload. The admin socket answers through
// one verb table (docs/admin.md): an unknown verb lists the known ones, a verb
// that needs a model says so.
//
// Config keys these tests use:
//   models.NAME.ttl                              unloaded after this long idle
//   groups.NAME.exclusive, groups.NAME.members   at most one member loaded
// Admin: yard events --json, yard stop NAME, yard start NAME --wait, {"cmd":"reload"}.
import fs from 'node:fs';
import { test } from 'node:test';
import { assert, admin, adminResult, waitFor, waitState, yard } from './lib/harness.mjs';
import { routerDaemon, mockCmd, mockText, chatBody, chatStreamText, openStream, events, yardOk } from './lib/router-helpers.mjs';

const show = (evs) => evs.map((e) => `${e.model}:${e.from}->${e.to} (${e.reason})`).join(' ');
const leaving = (evs, model, to) => evs.filter((e) => e.model === model && e.to === to);

test('a ttl unload and an eviction say why in their events', async () => {
    const y = await routerDaemon({
        models: {
            t: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms'), ttl: '1s' },
            a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
            b: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
        },
        groups: { pair: { exclusive: true, members: ['a', 'b'] } },
    });
    await yardOk(y.dir, ['start', 't', '--wait']);
    await waitState(y.dir, 't', 'stopped');
    let evs = await events(y.dir, { model: 't' });
    for (const to of ['stopping', 'stopped']) {
        const e = leaving(evs, 't', to).pop();
        assert.ok(e, show(evs));
        assert.equal(e.reason, 'idle for 1s (ttl)', show(evs));
    }

    await yardOk(y.dir, ['start', 'a', '--wait']);
    await yardOk(y.dir, ['start', 'b', '--wait']);
    evs = await events(y.dir, { model: 'a' });
    for (const to of ['stopping', 'stopped']) {
        const e = leaving(evs, 'a', to).pop();
        assert.ok(e, show(evs));
        assert.equal(e.reason, "evicted for 'b'", show(evs));
    }
    await y.d.stop();
});

test('yard stop says what it waits for while it drains, and its events say it was yard stop', async () => {
    const y = await routerDaemon({
        models: { a: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms --tokens-per-sec 20') } },
    });
    await yardOk(y.dir, ['start', 'a', '--wait']);
    const s = await openStream(`${y.base}/v1/chat/completions`, chatBody('a', { stream: true, max_tokens: 20 }));
    assert.equal(s.status, 200);
    await s.waitFor((text) => text.includes('tok0'), 10000);

    const r = await yard(['stop', 'a'], { stateDir: y.dir });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^waiting for 1 request in flight on 'a'\.\.\.$/m);
    assert.match(r.stdout, /stopped 'a'/);
    const done = await s.done;
    assert.ok(done.complete, `the stream was cut by the stop: ${done.text}`);
    assert.equal(chatStreamText(s.events()), mockText(20));
    // stopped already: said so, and nothing else happens
    const again = await yard(['stop', 'a'], { stateDir: y.dir });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, "'a' is already stopped\n");

    const evs = await events(y.dir, { model: 'a' });
    for (const to of ['stopping', 'stopped']) {
        const e = leaving(evs, 'a', to).pop();
        assert.ok(e, show(evs));
        assert.equal(e.reason, 'stopped by yard stop', show(evs));
    }

    // Nothing in flight: nothing to wait for, so nothing on stderr.
    await yardOk(y.dir, ['start', 'a', '--wait']);
    const r2 = await yard(['stop', 'a'], { stateDir: y.dir });
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(r2.stderr, '');
    await y.d.stop();
});

test('a model removed by reload stops with that reason', async () => {
    const y = await routerDaemon({
        models: {
            keep: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
            gone: { engine: 'vllm', cmd: mockCmd('vllm', '--load-time 100ms') },
        },
    });
    await yardOk(y.dir, ['start', 'gone', '--wait']);
    const text = fs.readFileSync(y.config, 'utf8');
    fs.writeFileSync(y.config, text.split('\n').filter((l) => !l.startsWith('  gone:')).join('\n'));
    const res = await adminResult(y.dir, { cmd: 'reload' });
    assert.deepEqual(res.stopped, ['gone']);
    let evs;
    await waitFor(async () => {
        evs = await events(y.dir, { model: 'gone' });
        return leaving(evs, 'gone', 'stopped').length > 0;
    }, { what: "'gone' stopped" });
    for (const to of ['stopping', 'stopped']) {
        const e = leaving(evs, 'gone', to).pop();
        assert.ok(e, show(evs));
        assert.equal(e.reason, 'removed from the config', show(evs));
    }
    await y.d.stop();
});

test('the admin socket answers from one verb table', async () => {
    const y = await routerDaemon({ models: { a: { engine: 'vllm', cmd: mockCmd('vllm') } } });
    const last = async (req) => (await admin(y.dir, req)).pop();

    let r = await last({ cmd: 'snapshot' });
    assert.equal(r.ok, false);
    assert.match(r.error, /^unknown command 'snapshot'; known commands: ps, version, start, stop, logs, events, reload, /);
    for (const verb of ['ps', 'pin', 'pod_setup', 'models']) assert.ok(r.error.includes(verb), r.error);

    for (const verb of ['start', 'logs', 'sleep', 'wake', 'pin', 'unpin']) {
        r = await last({ cmd: verb });
        assert.deepEqual(r, { ok: false, error: `'${verb}' needs a model name` });
        r = await last({ cmd: verb, model: 'nope' });
        assert.deepEqual(r, { ok: false, error: "unknown model 'nope'; configured models: a" });
    }
    r = await last({ cmd: 'stop' });
    assert.deepEqual(r, { ok: false, error: "'stop' needs a model name or --all" });
    // The connection stays usable after a refusal, and a known verb still answers.
    const lines = await admin(y.dir, '{"cmd":"nope"}\n{"cmd":"version"}\n', { until: (o, all) => all.length === 2 });
    assert.equal(lines[0].ok, false);
    assert.equal(lines[1].ok, true);
    assert.equal(typeof lines[1].result.pid, 'number');
    await y.d.stop();
});
