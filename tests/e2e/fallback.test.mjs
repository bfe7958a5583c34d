// hosts: an ordered preference, with fallback and moving back (docs/sched.md,
// "Hosts and fallback"), over two real sshd pods and this machine.
//
// box1 is reached through a TCP proxy (lib/proxy.mjs) that the test cuts and
// mends; box2 directly. Checks:
//   - hosts: [box1, box2, local]: the model runs on box1; box1 cut while a client
//     loop sends requests: the requests go on, served on box2, and at most the one
//     in flight at the cut fails (the next wait for the fallback); box1 mended: the engine there is found again, the idle
//     fallback on box2 stops (events say why) and requests are served on box1
//   - the engine on box1 ends while box1 is cut: box1 back, the model starts on
//     box1 again and the idle fallback stops
//   - hosts: [box1, local] with box1 cut before any start: it starts on local;
//     box1 back: it moves back to box1 once idle (drained, then started there)
//   - hosts: [local, box2] with local's GPU full (declared gpus, another model
//     holding it): it starts on box2 without evicting the local model
// It skips, saying why, when it does not run as root or sshd or ssh is missing.

import { test } from 'node:test';
import * as h from './lib/harness.mjs';
import { sshdSkipReason } from './lib/sshd.mjs';
import {
    askCompletion as ask,
    eventsText,
    podConfig as setup,
    podMock as mock,
    proxied,
    readyHosts,
    rows,
    startPod as pod,
} from './lib/pods.mjs';

const { assert } = h;
const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the fallback e2e tests: ${SKIP}`);

test('a pod lost mid-run: the next host serves, and the model moves back', { skip: SKIP || false, timeout: 180000 }, async () => {
    const dir = h.tmpdir('yard-fallback-');
    const sshd1 = await pod(dir, 'box1');
    const sshd2 = await pod(dir, 'box2');
    const proxy = await proxied(sshd1);
    const port = await h.freePort();
    const config = setup(dir, port, 20000 + Math.floor(Math.random() * 20000), {
        m: { engine: 'vllm', hosts: ['box1', 'box2', 'local'], cmd: mock() },
    });
    const d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    let loop = null;
    let running = true;
    try {
        for (const [name, ssh] of [['box1', sshd1.cmdForPort(proxy.port)], ['box2', sshd2.sshCmd]]) {
            const r = await yard('pod', 'add', name, '--ssh', ssh);
            assert.equal(r.code, 0, r.stderr);
        }
        const first = await ask(port, 'm');
        assert.equal(first.status, 200, first.body);
        assert.deepEqual(await readyHosts(dir, 'm'), ['box1']);
        const pid1 = (await rows(dir, 'm')).find((r) => r.host === 'box1').pid;

        // A client loop: one request after another, each result kept with when it ended.
        const results = [];
        loop = (async () => {
            while (running) {
                const r = await ask(port, 'm').catch((e) => ({ status: 0, body: String(e) }));
                results.push({ status: r.status, body: r.body, at: Date.now() });
            }
        })();
        await h.waitFor(() => results.filter((r) => r.status === 200).length >= 3, {
            timeoutMs: 20000, what: 'the loop served on box1',
        });

        proxy.break();
        const cut = Date.now();
        await h.waitFor(async () => (await readyHosts(dir, 'm')).includes('box2'), {
            timeoutMs: 30000, what: 'a fallback ready on box2',
        });
        const fallbackAt = Date.now();
        const lost = (await rows(dir, 'm')).find((r) => r.host === 'box1');
        assert.equal(lost.state, 'unknown', JSON.stringify(lost));
        assert.match(lost.reason, /box1/);
        await h.waitFor(() => results.filter((r) => r.status === 200 && r.at > fallbackAt).length >= 5, {
            timeoutMs: 20000, what: 'requests served after the fallback',
        });
        // At most the request in flight at the cut fails: the next ones wait for the fallback.
        const failed = results.filter((r) => r.status !== 200);
        console.log(`# ${failed.length} requests failed; the fallback served ${fallbackAt - cut} ms after the cut`);
        assert.ok(failed.length <= 1, failed.map((f) => `${f.status} ${f.body}`).join('\n'));

        // box1 back: its engine is found again, the idle fallback on box2 stops.
        proxy.mend();
        await h.waitFor(async () => {
            const r = await rows(dir, 'm');
            return r.length === 1 && r[0].host === 'box1' && r[0].state === 'ready';
        }, { timeoutMs: 60000, what: 'm back on box1 alone' });
        assert.equal((await rows(dir, 'm'))[0].pid, pid1, 'box1 runs another engine than before');
        const back = Date.now();
        await h.waitFor(() => results.filter((r) => r.status === 200 && r.at > back).length >= 3, {
            timeoutMs: 20000, what: 'requests served after the move back',
        });
        assert.match(await eventsText(dir), /box1 answers again and serves 'm'/);
        running = false;
        await loop;
        loop = null;
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

test('the engine on a lost pod ended meanwhile: it starts there again once the pod is back', { skip: SKIP || false, timeout: 180000 }, async () => {
    const dir = h.tmpdir('yard-fallback-gone-');
    const sshd1 = await pod(dir, 'box1');
    const proxy = await proxied(sshd1);
    const port = await h.freePort();
    const config = setup(dir, port, 20000 + Math.floor(Math.random() * 20000), {
        m: { engine: 'vllm', hosts: ['box1', 'local'], cmd: mock() },
    });
    const d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    try {
        const r = await yard('pod', 'add', 'box1', '--ssh', sshd1.cmdForPort(proxy.port));
        assert.equal(r.code, 0, r.stderr);
        assert.equal((await ask(port, 'm')).status, 200);
        const pid1 = (await rows(dir, 'm'))[0].pid;
        proxy.break();
        // The next request is served by a fallback on local (started for it).
        assert.equal((await ask(port, 'm')).status, 200);
        assert.ok((await readyHosts(dir, 'm')).includes('local'));
        // The pod's engine ends while yard cannot see it (the "pod" is this machine).
        for (const p of h.processesInGroup(h.pgidOf(pid1))) {
            try { process.kill(p, 'SIGKILL'); } catch {}
        }
        assert.equal((await ask(port, 'm')).status, 200);
        proxy.mend();
        await h.waitFor(async () => {
            const x = await rows(dir, 'm');
            return x.length === 1 && x[0].host === 'box1' && x[0].state === 'ready' && x[0].pid !== pid1;
        }, { timeoutMs: 60000, what: 'm started again on box1, the fallback stopped' });
        assert.match(await eventsText(dir), /box1 answers again and serves 'm'/);
        assert.equal((await ask(port, 'm')).status, 200);
    } finally {
        await d.stop();
        proxy.break();
        await proxy.close();
        await sshd1.proc.stop();
    }
});

test('a pod that does not answer at start: the next host, and back once idle', { skip: SKIP || false, timeout: 180000 }, async () => {
    const dir = h.tmpdir('yard-fallback-start-');
    const sshd1 = await pod(dir, 'box1');
    const proxy = await proxied(sshd1);
    const port = await h.freePort();
    const config = setup(dir, port, 20000 + Math.floor(Math.random() * 20000), {
        m: { engine: 'vllm', hosts: ['box1', 'local'], cmd: mock() },
    });
    const d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    try {
        const r = await yard('pod', 'add', 'box1', '--ssh', sshd1.cmdForPort(proxy.port));
        assert.equal(r.code, 0, r.stderr);
        proxy.break();
        const a = await ask(port, 'm');
        assert.equal(a.status, 200, a.body);
        assert.deepEqual(await readyHosts(dir, 'm'), ['local']);

        proxy.mend();
        await h.waitFor(async () => {
            const x = await rows(dir, 'm');
            return x.length === 1 && x[0].host === 'box1' && x[0].state === 'ready';
        }, { timeoutMs: 60000, what: 'm moved back to box1' });
        assert.match(await eventsText(dir), /moving back to box1, which answers again/);
        const b = await ask(port, 'm');
        assert.equal(b.status, 200, b.body);
    } finally {
        await d.stop();
        proxy.break();
        await proxy.close();
        await sshd1.proc.stop();
    }
});

test('local full: the next host in the preference, without evicting', { skip: SKIP || false, timeout: 120000 }, async () => {
    const dir = h.tmpdir('yard-fallback-full-');
    const sshd2 = await pod(dir, 'box2');
    const port = await h.freePort();
    const config = setup(
        dir, port, 20000 + Math.floor(Math.random() * 20000),
        {
            holder: { engine: 'vllm', vram: '30GiB', cmd: mock() },
            m: { engine: 'vllm', vram: '20GiB', hosts: ['local', 'box2'], cmd: mock() },
        },
        `gpus: [{index: 0, name: "Mock 40G", memory: 40GiB}]\n`,
    );
    const d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    try {
        const r = await yard('pod', 'add', 'box2', '--ssh', sshd2.sshCmd);
        assert.equal(r.code, 0, r.stderr);
        assert.equal((await ask(port, 'holder')).status, 200);
        const a = await ask(port, 'm');
        assert.equal(a.status, 200, a.body);
        assert.deepEqual(await readyHosts(dir, 'm'), ['box2']);
        assert.deepEqual(await readyHosts(dir, 'holder'), ['local'], 'the local model was evicted');
    } finally {
        await d.stop();
        await sshd2.proc.stop();
    }
});

test('memory freed on one host is never credited to another', { skip: SKIP || false, timeout: 120000 }, async () => {
    const dir = h.tmpdir('yard-fallback-credit-');
    const sshd2 = await pod(dir, 'box2', { YARD_FAKE_GPUS: '0,Mock 40G,40960' });
    const port = await h.freePort();
    const config = setup(
        dir, port, 20000 + Math.floor(Math.random() * 20000),
        {
            loc: { engine: 'vllm', vram: '30GiB', cmd: mock() },
            p1: { engine: 'vllm', vram: '30GiB', pod: 'box2', cmd: mock() },
            p2: { engine: 'vllm', vram: '30GiB', pod: 'box2', cmd: mock() },
        },
        `gpus: [{index: 0, name: "Mock 40G", memory: 40GiB}]\n`,
    );
    const d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    try {
        const r = await yard('pod', 'add', 'box2', '--ssh', sshd2.sshCmd);
        assert.equal(r.code, 0, r.stderr);
        // loc is used first: the least recently used, the first victim were hosts mixed up.
        assert.equal((await ask(port, 'loc')).status, 200);
        assert.equal((await ask(port, 'p1')).status, 200);
        const a = await ask(port, 'p2');
        assert.equal(a.status, 200, a.body);
        assert.deepEqual(await readyHosts(dir, 'p2'), ['box2']);
        assert.deepEqual(await readyHosts(dir, 'loc'), ['local'], "the local model was evicted for a pod's");
        assert.deepEqual(await readyHosts(dir, 'p1'), [], 'p1 still runs beside p2 on one 40 GiB GPU');
    } finally {
        await d.stop();
        await sshd2.proc.stop();
    }
});
