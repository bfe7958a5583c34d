// `yard hosts` and the host registry (docs/host.md), against a real sshd
// (lib/sshd.mjs) and the mock engine:
//   - local (declared GPUs, a model running there) and two pods added with
//     `yard pod add`, one reached through a TCP proxy: all reachable, each
//     with its kind, GPUs and instances, in the table and in --json
//   - the proxy refuses: that pod is reachable false with the reason, the
//     other stays true; the proxy lets through again: true again, and the
//     daemon logged the loss and the return (the registry's lost and found)
//   - `yard pod rm` takes the pod out of `yard hosts`
// And, without sshd: a read of local's GPUs runs off the loop. nvidia-smi is
// a stand-in that blocks until the test lets it go; a request to a model is
// answered while it still blocks (ordering, not timing).
// The pod test skips, saying why, when it does not run as root or sshd or ssh
// is missing.
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd } from './lib/sshd.mjs';
import { countingProxy } from './lib/proxy.mjs';
import { mockCmd, routerDaemon, yardOk } from './lib/router-helpers.mjs';

const { assert } = h;
const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the pod part of the hosts e2e tests: ${SKIP}`);
const NVSMI = path.join(h.YARD_SRC_DIR, 'tests/e2e/fixtures/nvidia-smi');

const hostsJson = (dir) => h.yardJson(['hosts', '--json'], { stateDir: dir });
const byName = (hosts, name) => hosts.find((x) => x.name === name);

test('yard hosts: local and two pods, one lost and found, one removed', { skip: SKIP || false }, async () => {
    const sshd = await startSshd();
    const proxy = await countingProxy(sshd.port);
    // The proxy is another port of the same host: its key is pinned for it too.
    const kh = path.join(sshd.dir, 'known_hosts');
    const pinned = fs.readFileSync(kh, 'utf8').split('\n')[0].replace(/^\S+/, '');
    fs.appendFileSync(kh, `[127.0.0.1]:${proxy.port}${pinned}\n`);
    const { dir, d } = await routerDaemon({
        top: `gpus: ${JSON.stringify([
            { index: 0, name: 'Mock A 40G', memory: '40GiB' },
            { index: 1, name: 'Mock B 40G', memory: '40GiB' },
        ])}\n`,
        models: { a: { engine: 'llamacpp', cmd: mockCmd('llamacpp') } },
    });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    try {
        for (const [name, ssh] of [['box1', sshd.cmdForPort(proxy.port)], ['box2', sshd.sshCmd]]) {
            const r = await yard('pod', 'add', name, '--ssh', ssh);
            assert.equal(r.code, 0, r.stderr);
        }
        assert.equal((await yard('start', 'a', '--wait')).code, 0);

        let hosts = await hostsJson(dir);
        assert.deepEqual(hosts.map((x) => x.name), ['local', 'box1', 'box2']);
        const local = byName(hosts, 'local');
        assert.equal(local.kind, 'local');
        assert.equal(local.reachable, true);
        assert.equal(local.reason, null);
        assert.deepEqual(local.instances, ['a']);
        assert.deepEqual(
            local.gpus.map((g) => [g.index, g.name, g.memory_total]),
            [[0, 'Mock A 40G', 40 * 1024 ** 3], [1, 'Mock B 40G', 40 * 1024 ** 3]]
        );
        for (const name of ['box1', 'box2']) {
            const p = byName(hosts, name);
            assert.equal(p.kind, 'pod');
            assert.equal(p.reachable, true, JSON.stringify(p));
            assert.deepEqual(p.instances, []);
            assert.ok(Array.isArray(p.gpus));
        }
        const table = await yardOk(dir, ['hosts']);
        assert.match(table, /^NAME\s+KIND\s+REACHABLE\s+GPUS\s+INSTANCES\n/);
        assert.match(table, /\nlocal\s+local\s+yes\s+2 GPUs \S+\/80\.0GiB\s+a\n/);
        assert.match(table, /\nbox1\s+pod\s+yes\s/);

        // box1's connection is cut: it is lost, with the reason; box2 is not.
        proxy.break();
        hosts = await hostsJson(dir);
        const lost = byName(hosts, 'box1');
        assert.equal(lost.reachable, false, JSON.stringify(lost));
        assert.match(lost.reason, /box1/);
        assert.equal(byName(hosts, 'box2').reachable, true);
        assert.match(await yardOk(dir, ['hosts']), /\nbox1\s+pod\s+no \(/);
        await h.waitFor(() => /host 'box1' is lost/.test(d.logText()), { what: 'the loss logged' });

        // Back: found again.
        proxy.mend();
        hosts = await hostsJson(dir);
        assert.equal(byName(hosts, 'box1').reachable, true, JSON.stringify(byName(hosts, 'box1')));
        assert.equal(byName(hosts, 'box1').reason, null);
        await h.waitFor(() => /host 'box1' answers again/.test(d.logText()), { what: 'the return logged' });

        // Removed: gone from the hosts.
        const rm = await yard('pod', 'rm', 'box2');
        assert.equal(rm.code, 0, rm.stderr);
        hosts = await hostsJson(dir);
        assert.deepEqual(hosts.map((x) => x.name), ['local', 'box1']);
        assert.doesNotMatch(await yardOk(dir, ['hosts']), /box2/);

        const bad = await yard('hosts', 'extra');
        assert.equal(bad.code, 2);
        assert.match(bad.stderr, /unexpected argument 'extra'/);
    } finally {
        await d.stop();
        proxy.break(); // the ssh master's connection through it ends too
        await proxy.close();
        await sshd.proc.stop();
    }
});

test('a slow nvidia-smi does not hold up requests: the GPU read runs off the loop', async () => {
    const dir = h.tmpdir('yard-slowsmi-');
    const started = path.join(dir, 'smi-started');
    const release = path.join(dir, 'smi-release');
    const finished = path.join(dir, 'smi-finished');
    // The stand-in blocks until the test lets it go (bounded below yard's 10 s kill).
    const smi = path.join(dir, 'nvidia-smi');
    fs.writeFileSync(
        smi,
        `#!/usr/bin/env bash\n: > ${JSON.stringify(started)}\n` +
            `for _ in $(seq 160); do [ -e ${JSON.stringify(release)} ] && break; sleep 0.05; done\n` +
            `: > ${JSON.stringify(finished)}\nexec ${JSON.stringify(NVSMI)} "$@"\n`,
        { mode: 0o755 }
    );
    const { base, d } = await routerDaemon({
        dir,
        top: `tools: ${JSON.stringify({ nvidia_smi: smi })}\n`,
        env: { YARD_FAKE_GPUS: '0,Mock 80G,81920' },
        models: { b: { engine: 'llamacpp', cmd: mockCmd('llamacpp') } },
    });
    try {
        await h.waitFor(() => fs.existsSync(started), { what: 'the GPU read under way' });
        const res = await fetch(`${base}/v1/chat/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'b', messages: [{ role: 'user', content: 'hi' }] }),
        });
        assert.equal(res.status, 200, await res.clone().text());
        await res.json();
        // Answered while nvidia-smi still blocks: the loop did not wait for it.
        assert.ok(!fs.existsSync(release));
        assert.ok(!fs.existsSync(finished), 'nvidia-smi finished before the answer');
        fs.writeFileSync(release, '');
        await h.waitFor(() => fs.existsSync(finished), { what: 'nvidia-smi let go' });
    } finally {
        fs.writeFileSync(release, '');
        await d.stop();
    }
});
