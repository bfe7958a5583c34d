// Eviction of a model on a pod: the tools run on the pod, over its ssh
// (docs/pods.md, "Eviction tools on a pod").
//
// The file starts its own sshd on 127.0.0.1 (lib/sshd.mjs); the pod's sessions
// get HOME in a temp dir and a PATH whose first entry holds the pod's
// cuda-checkpoint: a wrapper that records each call, with the session's
// SSH_CONNECTION, in the pod's home, then runs the stand-in of tools/standins/.
// This machine's cuda-checkpoint (tools.cuda_checkpoint) is a wrapper that
// records its calls in another file, which must stay empty. Checks:
//   - `yard sleep M --level suspend` toggles the engine's pid with the pod's
//     cuda-checkpoint, in an ssh session; the engine gives its GPU memory back
//     and keeps running; nothing runs here
//   - `yard wake M` resumes it on the pod, and a request is served by the same pid
// It skips, saying why, when it does not run as root or sshd or ssh is missing.

import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd } from './lib/sshd.mjs';
import { CUDA_CHECKPOINT, gpuPodEnv, recordingTool, toolCalls as calls } from './lib/standins.mjs';

const { assert } = h;

const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the pod-evict e2e tests: ${SKIP}`);

/** Whether the mock engine pid has a line in the ledger (holds "GPU memory"). */
function inLedger(ledger, pid) {
    if (!fs.existsSync(ledger)) return false;
    return fs
        .readFileSync(ledger, 'utf8')
        .split('\n')
        .some((l) => l.split(/\s+/).includes(String(pid)));
}

test('cuda_suspend of a model on a pod runs cuda-checkpoint on the pod', { skip: SKIP || false, timeout: 120000 }, async (t) => {
    const dir = h.tmpdir('yard-podevict-');
    const home = path.join(dir, 'pod-home');
    const podBin = path.join(dir, 'pod-bin');
    fs.mkdirSync(home, { recursive: true });
    fs.mkdirSync(podBin);
    const podCalls = path.join(home, 'cuda-checkpoint.calls');
    recordingTool(path.join(podBin, 'cuda-checkpoint'), podCalls, CUDA_CHECKPOINT);
    const localTool = path.join(dir, 'local-cuda-checkpoint');
    const localCalls = path.join(dir, 'local.calls');
    recordingTool(localTool, localCalls, CUDA_CHECKPOINT);
    const ledger = path.join(dir, 'gpu.ledger');
    const sshd = await startSshd({ keyEnv: gpuPodEnv(home, podBin, ledger) });
    const port = await h.freePort();
    const base = await h.freePort();
    const mock = h.MOCK_ENGINE_BIN;
    const config = h.writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\n` +
            `start_port: ${base}\n` +
            `tools: { cuda_checkpoint: ${JSON.stringify(localTool)} }\n` +
            `models:\n` +
            `  m:\n    engine: llamacpp\n    pod: box\n` +
            `    eviction: { process: cuda_suspend }\n` +
            `    cmd: "${mock} --flavor llamacpp --port \${PORT} --name \${NAME} ` +
            `--vram 1GiB --ledger ${ledger} --load-time 100ms"\n`,
    );
    const d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    const row = async () => (await h.yardJson(['ps', '--json'], { stateDir: dir })).find((r) => r.name === 'm');
    const ask = () =>
        h.httpPost(
            `http://127.0.0.1:${port}/v1/completions`,
            JSON.stringify({ model: 'm', prompt: 'hi', max_tokens: 2 }),
            { headers: { 'Content-Type': 'application/json' } },
        );
    try {
        const add = await yard('pod', 'add', 'box', '--ssh', sshd.sshCmd);
        assert.equal(add.code, 0, add.stderr);
        const start = await yard('start', 'm', '--wait');
        assert.equal(start.code, 0, start.stderr);
        const pid = (await row()).pid; // the tree's leader on the pod
        assert.equal((await row()).host, 'box');
        // the process holding GPU memory: the engine, a child of the pod's leader
        const gpuPid = Number(fs.readFileSync(ledger, 'utf8').trim().split(/\s+/)[0]);
        assert.ok(gpuPid > 0 && h.pidAlive(gpuPid), 'the engine holds no GPU memory before the suspend');

        await t.test('yard sleep --level suspend runs the stand-in on the pod', async () => {
            const r = await yard('sleep', 'm', '--level', 'suspend');
            assert.equal(r.code, 0, r.stderr);
            const e = await row();
            assert.equal(e.state, 'sleeping');
            assert.match(e.reason, /suspended with cuda-checkpoint/);
            assert.equal(e.pid, pid);
            assert.ok(h.pidAlive(pid));
            assert.ok(!inLedger(ledger, gpuPid), 'a suspended engine still holds GPU memory');
            assert.ok(h.pidAlive(gpuPid));
            const seen = calls(podCalls);
            assert.ok(seen.length >= 2, seen.join('\n'));
            for (const c of seen) assert.match(c, /^127\.0\.0\.1 \d+ 127\.0\.0\.1 \d+\|/, 'not in an ssh session');
            assert.ok(seen.some((c) => c.endsWith(`|--toggle --pid ${gpuPid}`)), seen.join('\n'));
            assert.ok(seen.some((c) => c.endsWith(`|--get-state --pid ${gpuPid}`)), seen.join('\n'));
            assert.deepEqual(calls(localCalls), [], "this machine's cuda-checkpoint ran");
        });

        await t.test('yard wake resumes it on the pod and a request is served', async () => {
            const before = calls(podCalls).length;
            const r = await yard('wake', 'm');
            assert.equal(r.code, 0, r.stderr);
            assert.equal((await row()).state, 'ready');
            const a = await ask();
            assert.equal(a.status, 200, a.body);
            assert.equal((await row()).pid, pid);
            assert.ok(inLedger(ledger, gpuPid), 'the woken engine has no GPU memory');
            const after = calls(podCalls).slice(before);
            assert.ok(after.some((c) => c.endsWith(`|--toggle --pid ${gpuPid}`)), after.join('\n'));
            assert.deepEqual(calls(localCalls), [], "this machine's cuda-checkpoint ran");
        });

    } finally {
        await d.stop();
    }
});
