// Replicas of one model spread over hosts (docs/sched.md, "Replicas" and
// "Hosts and fallback"), end to end over two real sshd pods and this machine.
//
// Each host has one 40 GiB GPU (the pods' stand-in nvidia-smi lists one, local's
// is declared in the config) and the model takes 30 GiB of it, so one replica
// fits per host. box1 is reached through a TCP proxy (lib/proxy.mjs) that the test
// cuts and mends; box2 directly. Checks:
//   - replicas: 3, hosts: [box1, box2, local], concurrency 1: a queue that waits
//     past scale_after starts replicas until one runs on each host; `yard ps
//     --json` has one row per instance with its host and replica; a burst is
//     spread over the three (the X-Yard-Replica of each answer, and each engine's
//     own count of requests served)
//   - box1 cut while three clients send requests one after another: the requests
//     go on, served on box2 and local; only requests in flight at the cut may
//     fail; replica 0 on box1 goes `unknown`, saying which pod, and no request is
//     routed to it while box1 is cut; box1 mended: its engine (the same pid) is
//     found again and serves again
//   - replicas: 2, hosts: [box2, box1, local]: replica 1 runs on box1; box1 cut
//     and its engine ended meanwhile: the queue waits past scale_after with
//     replica 0 busy, so a stand-in starts on local (the lost replica keeps its
//     row, `unknown`: yard cannot know its engine ended) and serves; box1
//     mended: replica 1 fails (`exited while pod 'box1' did not answer`), the
//     idle stand-in stops, and a queue that needs a second replica again starts
//     replica 1 on box1
// Nothing here asserts how long anything took. It skips, saying why, when it does
// not run as root or sshd or ssh is missing.

import { test } from 'node:test';
import * as h from './lib/harness.mjs';
import { sshdSkipReason } from './lib/sshd.mjs';
import {
    askCompletion,
    eventsText,
    podConfig,
    podMock,
    proxied,
    readyHosts,
    rows,
    startPod,
} from './lib/pods.mjs';
import { events } from './lib/router-helpers.mjs';

const { assert } = h;
const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the replicas-on-pods e2e tests: ${SKIP}`);

const GPU = { YARD_FAKE_GPUS: '0,Mock 40G,40960' };
const LOCAL_GPU = 'gpus: [{index: 0, name: "Mock 40G", memory: 40GiB}]\n';

// 10 tokens at 20 tokens/s: a request holds its replica's one slot for about half a second.
const model = (hosts, replicas) => ({
    engine: 'vllm',
    vram: '30GiB',
    hosts,
    replicas,
    concurrency: 1,
    scale_after: '300ms',
    ttl: '10m',
    cmd: podMock(' --tokens-per-sec 20'),
});
const TOKENS = 10;

/** n requests at once; every one must be answered 200. Returns the replica that served each. */
async function burst(port, n) {
    const answers = await Promise.all(Array.from({ length: n }, () => askCompletion(port, 'm', TOKENS)));
    const bad = answers.filter((a) => a.status !== 200);
    // fatal: a failed request ends the wait that sends bursts, it is not "not yet".
    if (bad.length) throw h.fatal(`${bad.length} of ${n} failed: ${bad.map((a) => `${a.status} ${a.body}`).join('\n')}`);
    return answers.map((a) => a.headers['x-yard-replica']);
}

/** Sends bursts until model m has ready instances on exactly the hosts want (in replica order). */
function burstUntil(dir, port, want, what) {
    return h.waitFor(
        async () => {
            await burst(port, 2 * want.length);
            const r = await rows(dir, 'm');
            return r.length === want.length && r.every((x) => x.state === 'ready') &&
                r.every((x, i) => x.host === want[i]) ? r : false;
        },
        { timeoutMs: 90000, intervalMs: 50, what },
    );
}

/** The requests an engine says it served (vllm:request_success_total), read from it directly. */
async function engineServed(row) {
    const r = await h.httpGet(`http://127.0.0.1:${row.port}/metrics`);
    assert.equal(r.status, 200, r.body);
    const m = r.body.match(/^vllm:request_success_total\{[^}]*\} (\d+)/m);
    assert.ok(m, `no request_success_total from ${row.host}'s engine: ${r.body}`);
    return Number(m[1]);
}

async function addPods(dir, pods) {
    for (const [name, ssh] of pods) {
        const r = await h.yard(['pod', 'add', name, '--ssh', ssh], { stateDir: dir });
        assert.equal(r.code, 0, r.stderr);
    }
}

/** Kills the process group of pid (a pod's engine: the pod is this machine). */
async function killGroup(pid) {
    for (const p of h.processesInGroup(h.pgidOf(pid))) {
        try {
            process.kill(p, 'SIGKILL');
        } catch {}
    }
    await h.waitFor(() => !h.pidAlive(pid), { what: `pid ${pid} to end` });
}

test('replicas on two pods and local: one per host, requests spread; a pod cut mid-run and mended', { skip: SKIP || false, timeout: 240000 }, async () => {
    const dir = h.tmpdir('yard-replicas-pods-');
    const sshd1 = await startPod(dir, 'box1', GPU);
    const sshd2 = await startPod(dir, 'box2', GPU);
    const proxy = await proxied(sshd1);
    const port = await h.freePort();
    const config = podConfig(dir, port, 20000 + Math.floor(Math.random() * 20000), {
        m: model(['box1', 'box2', 'local'], 3),
    }, LOCAL_GPU);
    const d = await h.startDaemon({ config, stateDir: dir });
    let running = false;
    let loop = null;
    try {
        await addPods(dir, [['box1', sshd1.cmdForPort(proxy.port)], ['box2', sshd2.sshCmd]]);

        // The first request loads replica 0 alone, on the first host of the preference.
        assert.deepEqual(await burst(port, 1), ['0']);
        assert.deepEqual((await rows(dir, 'm')).map((x) => [x.replica, x.host]), [[0, 'box1']]);

        // Queues that wait past scale_after: a replica more each time, on the next host with room.
        const three = await burstUntil(dir, port, ['box1', 'box2', 'local'], 'a ready replica on each host');
        assert.deepEqual(three.map((x) => x.replica), [0, 1, 2]);
        assert.equal(new Set(three.map((x) => x.pid)).size, 3, JSON.stringify(three));
        for (const x of three) assert.equal(x.engine, 'vllm');
        // A pod that runs a replica other than 0 runs the model: listed, and kept from `pod rm`.
        const pods = await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir });
        assert.deepEqual(pods.find((p) => p.name === 'box2').models, [{ name: 'm', state: 'ready' }]);
        const rm = await h.yard(['pod', 'rm', 'box2'], { stateDir: dir });
        assert.notEqual(rm.code, 0, rm.stdout);
        assert.match(rm.stderr, /pod 'box2' runs models: m; stop them first/);

        // Nine at once on three replicas of concurrency 1: each replica serves some.
        const before = await Promise.all(three.map(engineServed));
        const by = await burst(port, 9);
        const answers = three.map((x) => by.filter((r) => r === String(x.replica)).length);
        for (const x of three) {
            assert.ok(answers[x.replica] > 0, `replica ${x.replica} on ${x.host} served none of ${by}`);
        }
        // Each engine counts what it served once its answer is written: poll until all have.
        await h.waitFor(async () => {
            const after = await Promise.all(three.map(engineServed));
            return after.every((n, i) => n - before[i] === answers[i]);
        }, { what: `the engines' own counts to be ${answers} (by replica)` });

        // Three clients, one request after another each: every replica is kept busy.
        const results = [];
        running = true;
        const client = async () => {
            while (running) {
                const start = Date.now();
                const r = await askCompletion(port, 'm', TOKENS).catch((e) => ({ status: 0, body: String(e), headers: {} }));
                results.push({ status: r.status, body: r.body, replica: r.headers['x-yard-replica'], start });
            }
        };
        loop = Promise.all([client(), client(), client()]);
        await h.waitFor(() => results.filter((r) => r.replica === '0').length >= 2, {
            timeoutMs: 20000, what: 'box1 serving the clients',
        });

        proxy.break();
        const cut = Date.now();
        const lost = await h.waitFor(async () => {
            const x = (await rows(dir, 'm')).find((r) => r.replica === 0);
            return x && x.state === 'unknown' ? x : false;
        }, { timeoutMs: 30000, what: "replica 0 on box1 'unknown'" });
        const unknownAt = Date.now();
        assert.equal(lost.host, 'box1');
        assert.match(lost.reason, /pod 'box1'/);
        assert.equal(lost.pid, three[0].pid);
        await h.waitFor(() => results.filter((r) => r.status === 200 && r.start > unknownAt).length >= 8, {
            timeoutMs: 30000, what: 'requests served while box1 is cut',
        });
        const during = await rows(dir, 'm');
        assert.deepEqual(during.map((x) => [x.replica, x.host, x.state]),
            [[0, 'box1', 'unknown'], [1, 'box2', 'ready'], [2, 'local', 'ready']]);
        const mended = Date.now();
        proxy.mend();
        const whileCut = results.filter((r) => r.status === 200 && r.start > unknownAt && r.start < mended);
        assert.ok(!whileCut.some((r) => r.replica === '0'), 'a request sent while box1 was cut was served by replica 0');
        assert.ok(whileCut.some((r) => r.replica === '1') && whileCut.some((r) => r.replica === '2'),
            `served while cut by ${whileCut.map((r) => r.replica)}`);

        // box1 back: the same engine is found again and takes requests again.
        const back = await h.waitFor(async () => {
            const x = (await rows(dir, 'm')).find((r) => r.replica === 0);
            return x && x.state === 'ready' ? x : false;
        }, { timeoutMs: 60000, what: 'replica 0 ready again on box1' });
        assert.equal(back.host, 'box1');
        assert.equal(back.pid, three[0].pid, 'box1 runs another engine than before');
        const readyAgain = Date.now();
        await h.waitFor(() => results.some((r) => r.replica === '0' && r.start > readyAgain), {
            timeoutMs: 20000, what: 'replica 0 serving again',
        });
        running = false;
        await loop;
        loop = null;

        // Only requests in flight at the cut may have failed.
        const failed = results.filter((r) => r.status !== 200);
        console.log(`# ${results.length} requests, ${failed.length} failed; 'unknown' seen ${unknownAt - cut} ms after the cut`);
        for (const f of failed) assert.ok(f.start < cut, `a request sent after the cut failed: ${f.status} ${f.body}`);
        assert.ok(failed.length <= 3, failed.map((f) => `${f.status} ${f.body}`).join('\n'));
        assert.deepEqual(await readyHosts(dir, 'm'), ['box1', 'box2', 'local']);
    } finally {
        running = false;
        if (loop) await loop;
        await d.stop();
        proxy.break();
        await proxy.close();
        await sshd1.proc.stop();
        await sshd2.proc.stop();
    }
});

test('a replica on a lost pod whose engine ended: a stand-in serves on a host that answers', { skip: SKIP || false, timeout: 240000 }, async () => {
    const dir = h.tmpdir('yard-replicas-pods-lost-');
    const sshd1 = await startPod(dir, 'box1', GPU);
    const sshd2 = await startPod(dir, 'box2', GPU);
    const proxy = await proxied(sshd1);
    const port = await h.freePort();
    const config = podConfig(dir, port, 20000 + Math.floor(Math.random() * 20000), {
        m: model(['box2', 'box1', 'local'], 2),
    }, LOCAL_GPU);
    const d = await h.startDaemon({ config, stateDir: dir });
    try {
        await addPods(dir, [['box1', sshd1.cmdForPort(proxy.port)], ['box2', sshd2.sshCmd]]);
        assert.deepEqual(await burst(port, 1), ['0']);
        const two = await burstUntil(dir, port, ['box2', 'box1'], 'replicas on box2 and box1');

        // box1 cut, and its engine ends meanwhile: yard cannot see it.
        proxy.break();
        await h.waitFor(async () => (await rows(dir, 'm')).find((r) => r.replica === 1).state === 'unknown', {
            timeoutMs: 30000, what: "replica 1 on box1 'unknown'",
        });
        await killGroup(two[1].pid);

        // Replica 0 alone cannot keep up: past scale_after a stand-in starts where there is room.
        const stand = await h.waitFor(async () => {
            await burst(port, 4);
            const r = await rows(dir, 'm');
            const s = r.find((x) => x.host === 'local');
            return s && s.state === 'ready' ? r : false;
        }, { timeoutMs: 60000, intervalMs: 50, what: 'a stand-in ready on local' });
        // The lost replica keeps its row: its engine might still run, for all yard knows.
        assert.deepEqual(stand.map((x) => [x.replica, x.host, x.state]),
            [[0, 'box2', 'ready'], [1, 'box1', 'unknown'], [2, 'local', 'ready']]);
        const by = await burst(port, 6);
        assert.ok(by.includes('0') && by.includes('2'), `answers by replica: ${by}`);
        assert.ok(!by.includes('1'), `the lost replica answered: ${by}`);

        // box1 back: replica 1 is found gone, and the stand-in, idle, stops.
        proxy.mend();
        await h.waitFor(async () => {
            const r = await rows(dir, 'm');
            const one = r.find((x) => x.replica === 1);
            return !r.some((x) => x.host === 'local') && (!one || one.state === 'failed');
        }, { timeoutMs: 60000, what: 'replica 1 failed and the stand-in stopped' });
        const evs = await events(dir, { model: 'm' });
        assert.ok(evs.some((e) => e.replica === 1 && e.to === 'failed' && /exited while pod 'box1' did not answer/.test(e.reason)),
            `no failure of replica 1 in ${JSON.stringify(evs.filter((e) => e.replica === 1))}`);
        assert.ok(evs.some((e) => e.replica === 2 && e.to === 'stopping' && /box1 answers again/.test(e.reason)),
            `the stand-in's stop does not say why: ${JSON.stringify(evs.filter((e) => e.replica === 2))}`);
        assert.match(await eventsText(dir), /box1 answers again/);

        // The queue needs a second replica again: replica 1 starts anew, on box1.
        const again = await burstUntil(dir, port, ['box2', 'box1'], 'replica 1 started again on box1');
        assert.notEqual(again[1].pid, two[1].pid);
    } finally {
        await d.stop();
        proxy.break();
        await proxy.close();
        await sshd1.proc.stop();
        await sshd2.proc.stop();
    }
});
