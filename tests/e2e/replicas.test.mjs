// Replicas: a model with `replicas: N` runs up to N instances. Requests go to the
// ready replica with the fewest requests in flight (a tie: the lowest replica);
// another replica starts when the oldest waiting request has waited longer than
// `scale_after` with every ready replica at its `concurrency`; a replica beyond
// the first stops after the model's ttl when it is idle. Each replica is a row of
// its own in the store, keyed by (model, host, replica), so a new daemon adopts
// every one.
//
// Config keys these tests use:
//   models.NAME.replicas: N, scale_after: DURATION, concurrency: 1, ttl, restart
// What they observe: the X-Yard-Replica header on each answer (which replica
// served it), `yard ps --json` rows (replica, pid, port, state) and `yard events
// --json` (replica on each transition).

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { assert, httpPost, pidAlive, ps, startDaemon, waitFor, yard } from './lib/harness.mjs';
import { routerDaemon, mockCmd, chatBody, events } from './lib/router-helpers.mjs';

const rows = async (dir, name) =>
    (await ps(dir)).filter((e) => e.name === name).sort((a, b) => a.replica - b.replica);
const chat = (y, max_tokens) => httpPost(`${y.base}/v1/chat/completions`, chatBody('m', { max_tokens }));

/** Sends n requests at once; each must succeed. Returns the replica that served each. */
async function burst(y, n, max_tokens) {
    const answers = await Promise.all(Array.from({ length: n }, () => chat(y, max_tokens)));
    for (const a of answers) assert.equal(a.status, 200, a.body);
    return answers.map((a) => a.headers['x-yard-replica']);
}

/** Waits until model m has two ready rows (replicas 0 and 1); returns them. */
async function twoReady(dir) {
    return waitFor(
        async () => {
            const r = await rows(dir, 'm');
            return r.length === 2 && r.every((e) => e.state === 'ready') ? r : false;
        },
        { timeoutMs: 15000, what: 'two ready replicas of m' }
    );
}

// 20 tokens at 20 tokens/s: a request holds its replica's one slot for about a second.
const SLOW = '--tokens-per-sec 20 --load-time 100ms';

test('replicas: a queue that waits past scale_after starts replica 1, requests spread, the idle replica stops after its ttl', async () => {
    const y = await routerDaemon({
        models: {
            m: { engine: 'vllm', cmd: mockCmd('vllm', SLOW), replicas: 2, concurrency: 1, scale_after: '300ms', ttl: '2s' },
        },
    });
    // One replica to begin with: the first request loads replica 0 only.
    assert.deepEqual(await burst(y, 1, 2), ['0']);
    let r = await rows(y.dir, 'm');
    assert.equal(r.length, 1, JSON.stringify(r));
    assert.equal(r[0].replica, 0);

    // Six at once on concurrency 1: five wait, the oldest past 300 ms starts replica 1.
    const served = await burst(y, 6, 20);
    assert.ok(served.includes('0') && served.includes('1'), `answers by replica: ${served}`);
    r = await twoReady(y.dir);
    assert.notEqual(r[0].pid, r[1].pid);
    assert.notEqual(r[0].port, r[1].port);
    const evs = await events(y.dir, { model: 'm' });
    assert.ok(
        evs.some((e) => e.replica === 1 && e.to === 'starting') && evs.some((e) => e.replica === 1 && e.to === 'ready'),
        `no replica 1 start in ${JSON.stringify(evs.map((e) => [e.replica, e.to]))}`
    );

    // Each replica logs to a file of its own; replica 0 keeps m.log.
    const log1 = await yard(['logs', 'm', '--replica', '1'], { stateDir: y.dir });
    assert.equal(log1.code, 0, log1.stderr);
    assert.ok(fs.existsSync(path.join(y.dir, 'logs', 'm.1.log')));
    assert.match(log1.stdout, new RegExp(`\\(APIServer pid=${r[1].pid}\\)`));
    assert.doesNotMatch(log1.stdout, new RegExp(`\\(APIServer pid=${r[0].pid}\\)`));
    const log0 = await yard(['logs', 'm'], { stateDir: y.dir });
    assert.match(log0.stdout, new RegExp(`\\(APIServer pid=${r[0].pid}\\)`));
    assert.doesNotMatch(log0.stdout, new RegExp(`\\(APIServer pid=${r[1].pid}\\)`));
    const log2 = await yard(['logs', 'm', '--replica', '2'], { stateDir: y.dir });
    assert.notEqual(log2.code, 0);
    assert.match(log2.stderr, /replica 2 of 'm' has no log .* it never ran/);

    // One request at a time: both replicas are idle, so replica 0 takes each (a tie
    // goes to the lowest), and replica 1, idle, stops on its ttl while 0 stays.
    const pid0 = r[0].pid;
    await waitFor(
        async () => {
            const [one] = await burst(y, 1, 2);
            assert.equal(one, '0', 'a request went to the higher replica on a tie');
            const now = await rows(y.dir, 'm');
            return now.length === 1 ? now : false;
        },
        { timeoutMs: 15000, intervalMs: 100, what: 'replica 1 to stop after its ttl' }
    );
    r = await rows(y.dir, 'm');
    assert.equal(r[0].replica, 0);
    assert.equal(r[0].state, 'ready');
    assert.equal(r[0].pid, pid0);
    const after = await events(y.dir, { model: 'm' });
    assert.ok(after.some((e) => e.replica === 1 && e.to === 'stopped'), 'replica 1 has no stopped event');
    assert.ok(!after.some((e) => e.replica === 0 && e.to === 'stopped'), 'replica 0 stopped too');
    await y.d.stop();
});

test('replicas: kill -9 of one replica moves requests to the other and it restarts; a new daemon adopts both', async () => {
    const y = await routerDaemon({
        models: {
            m: {
                engine: 'vllm',
                cmd: mockCmd('vllm', SLOW),
                replicas: 2,
                concurrency: 1,
                scale_after: '300ms',
                ttl: '10m',
                restart: 'on-failure',
            },
        },
    });
    await burst(y, 1, 2);
    await burst(y, 6, 20);
    const before = await twoReady(y.dir);

    // Replica 0 dies: once yard saw it, requests go to replica 1 while 0 restarts.
    process.kill(before[0].pid, 'SIGKILL');
    await waitFor(async () => (await rows(y.dir, 'm'))[0].state !== 'ready', { what: 'replica 0 seen dead' });
    const during = await burst(y, 1, 2);
    const back = await waitFor(
        async () => {
            const r = await rows(y.dir, 'm');
            return r[0].state === 'ready' && r[0].pid !== before[0].pid ? r : false;
        },
        { timeoutMs: 15000, what: 'replica 0 restarted' }
    );
    assert.ok(['0', '1'].includes(during[0]));
    assert.equal(back[1].pid, before[1].pid, 'replica 1 was disturbed');
    const evs = await events(y.dir, { model: 'm' });
    assert.ok(evs.some((e) => e.replica === 0 && e.to === 'failed'), 'no failure of replica 0 recorded');

    // The daemon is killed; a new one adopts both replicas from the store, by replica.
    y.d.kill('SIGKILL');
    assert.ok(await y.d.waitExit(), 'the killed daemon did not exit');
    assert.ok(pidAlive(back[0].pid) && pidAlive(back[1].pid), 'an engine died with its daemon');
    const d2 = await startDaemon({ config: y.config, stateDir: y.dir });
    const adopted = await twoReady(y.dir);
    assert.deepEqual(
        adopted.map((e) => [e.replica, e.pid, e.port]),
        back.map((e) => [e.replica, e.pid, e.port])
    );
    // Both serve for the new daemon: two at once take one replica each.
    const both = await burst(y, 2, 20);
    assert.deepEqual(both.sort(), ['0', '1']);
    await d2.stop();
    await waitFor(() => !pidAlive(back[0].pid) && !pidAlive(back[1].pid), { what: 'both engines stopped' });
});
