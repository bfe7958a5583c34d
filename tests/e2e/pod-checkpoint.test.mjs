// CRIU checkpoints of a model on a pod: the dump, the restore and everything
// read from the images directory run on the pod, over its ssh (docs/pods.md,
// "Eviction tools on a pod").
//
// The file starts its own sshd on 127.0.0.1 (lib/sshd.mjs); the pod's sessions
// get HOME in a temp dir and a PATH whose first entry holds the pod's criu and
// cuda-checkpoint: wrappers that record each call, with the session's
// SSH_CONNECTION, in the pod's home, then run the stand-ins of tools/standins/.
// The pod's criu fails as a full disk does ("No space left on device") while
// the file HOME/criu-disk-full exists. This machine's criu and cuda-checkpoint
// (tools:) record their calls in files that must stay empty. Checks:
//   - `yard sleep M --level checkpoint` dumps the engine's tree with the pod's
//     criu into ~/.yard/checkpoints/M there; the tree is off the CPU after it
//   - `yard wake M` restores it on the pod; ps records the restored pid, a
//     request is served, the images are removed
//   - a restore whose root comes back as another process (the pod's criu names
//     another pid of the tree) is recorded, watched and reached through a new forward
//   - a dump that fails leaves the model stopped, with criu's error as the reason
//   - a dump whose ssh connection drops (the pod's sshd for it is killed) leaves
//     the model stopped, its tree gone, its images removed
// It skips, saying why, when it does not run as root or sshd or ssh is missing.

import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd } from './lib/sshd.mjs';
import { CRIU, CUDA_CHECKPOINT, gpuPodEnv, recordingTool, toolCalls as calls } from './lib/standins.mjs';

const { assert } = h;

const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the pod-checkpoint e2e tests: ${SKIP}`);

/** Field 3 of /proc/PID/stat (R, S, T ...), or null when the process is gone. */
function procState(pid) {
    try {
        const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return text.slice(text.lastIndexOf(')') + 2).split(' ')[0];
    } catch {
        return null;
    }
}

test('a CRIU checkpoint of a model on a pod runs on the pod', { skip: SKIP || false, timeout: 180000 }, async (t) => {
    const dir = h.tmpdir('yard-podckpt-');
    const home = path.join(dir, 'pod-home');
    const podBin = path.join(dir, 'pod-bin');
    fs.mkdirSync(home, { recursive: true });
    fs.mkdirSync(podBin);
    const podCriuCalls = path.join(home, 'criu.calls');
    const diskFull = path.join(home, 'criu-disk-full');
    const sshDrop = path.join(home, 'criu-ssh-drop');
    const newRoot = path.join(home, 'criu-new-root');
    recordingTool(path.join(podBin, 'criu'), podCriuCalls, CRIU, {
        failFile: diskFull,
        dropFile: sshDrop,
        newRootFile: newRoot,
    });
    recordingTool(path.join(podBin, 'cuda-checkpoint'), path.join(home, 'cuda.calls'), CUDA_CHECKPOINT);
    const localCalls = path.join(dir, 'local.calls');
    const localCriu = path.join(dir, 'local-criu');
    const localCuda = path.join(dir, 'local-cuda-checkpoint');
    recordingTool(localCriu, localCalls, CRIU);
    recordingTool(localCuda, localCalls, CUDA_CHECKPOINT);
    const ledger = path.join(dir, 'gpu.ledger');
    const sshd = await startSshd({ keyEnv: gpuPodEnv(home, podBin, ledger) });
    const port = await h.freePort();
    const base = await h.freePort();
    const mock = h.MOCK_ENGINE_BIN;
    const config = h.writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\n` +
            `start_port: ${base}\n` +
            `tools: { cuda_checkpoint: ${JSON.stringify(localCuda)}, criu: ${JSON.stringify(localCriu)} }\n` +
            `defaults: { stop_timeout: 2s }\n` +
            `models:\n` +
            `  m:\n    engine: llamacpp\n    pod: box\n` +
            `    eviction: { process: checkpoint }\n` +
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
    const images = path.join(home, '.yard', 'checkpoints', 'm');
    try {
        const add = await yard('pod', 'add', 'box', '--ssh', sshd.sshCmd);
        assert.equal(add.code, 0, add.stderr);
        const start = await yard('start', 'm', '--wait');
        assert.equal(start.code, 0, start.stderr);
        const pid = (await row()).pid; // the tree's leader on the pod
        assert.equal((await row()).host, 'box');
        const gpuPid = Number(fs.readFileSync(ledger, 'utf8').trim().split(/\s+/)[0]);
        assert.ok(gpuPid > 0 && h.pidAlive(gpuPid), 'the engine holds no GPU memory before the checkpoint');

        await t.test('yard sleep --level checkpoint dumps the tree with the pod\'s criu', async () => {
            const r = await yard('sleep', 'm', '--level', 'checkpoint');
            assert.equal(r.code, 0, r.stderr);
            const e = await row();
            assert.equal(e.state, 'checkpointed');
            assert.match(e.reason, /checkpointed with CRIU on pod 'box' to \/.*\/\.yard\/checkpoints\/m/);
            const seen = calls(podCriuCalls);
            assert.equal(seen.length, 1, seen.join('\n'));
            assert.match(seen[0], /^127\.0\.0\.1 \d+ 127\.0\.0\.1 \d+\|dump --tree (\d+) --images-dir (\S+) /);
            assert.match(seen[0], new RegExp(`\\|dump --tree ${pid} --images-dir ${images} `));
            assert.ok(fs.existsSync(path.join(images, 'inventory.img')), 'no images on the pod');
            // the suspended pids are recorded beside the images, on the pod
            assert.deepEqual(fs.readFileSync(path.join(images, 'yard-cuda-pids'), 'utf8').trim().split('\n'), [
                String(gpuPid),
            ]);
            // the stand-in takes the tree off the CPU: stopped, its GPU memory released
            assert.equal(procState(pid), 'T');
            assert.equal(procState(gpuPid), 'T');
            assert.deepEqual(calls(localCalls), [], "this machine's tools ran");
        });

        await t.test('yard wake restores it on the pod and a request is served', async () => {
            const r = await yard('wake', 'm');
            assert.equal(r.code, 0, r.stderr);
            const e = await row();
            assert.equal(e.state, 'ready');
            assert.equal(e.pid, pid, 'the restored pid is not the one recorded');
            assert.notEqual(procState(pid), 'T');
            assert.notEqual(procState(gpuPid), 'T');
            const a = await ask();
            assert.equal(a.status, 200, a.body);
            const seen = calls(podCriuCalls);
            assert.equal(seen.length, 2, seen.join('\n'));
            assert.match(
                seen[1],
                new RegExp(`^127\\.0\\.0\\.1 \\d+ 127\\.0\\.0\\.1 \\d+\\|restore --images-dir ${images} .*--restore-detached`),
            );
            assert.match(seen[1], new RegExp(`--pidfile ${images}/yard-restore\\.pid`));
            await h.waitFor(() => !fs.existsSync(images), { what: 'the images removed on the pod' });
            assert.deepEqual(calls(localCalls), [], "this machine's tools ran");
        });

        await t.test('a tree restored as another process is adopted and forwarded again', async () => {
            const sl = await yard('sleep', 'm', '--level', 'checkpoint');
            assert.equal(sl.code, 0, sl.stderr);
            assert.equal((await row()).state, 'checkpointed');
            fs.writeFileSync(newRoot, `${gpuPid}\n`);
            const r = await yard('wake', 'm');
            fs.rmSync(newRoot);
            assert.equal(r.code, 0, r.stderr);
            const e = await row();
            assert.equal(e.state, 'ready');
            assert.equal(e.pid, gpuPid, 'the restored root is not the one recorded');
            const a = await ask();
            assert.equal(a.status, 200, a.body);
            assert.deepEqual(calls(localCalls), [], "this machine's tools ran");
        });

        await t.test('a dump that fails leaves the model stopped with criu\'s error', async () => {
            fs.writeFileSync(diskFull, '');
            const r = await yard('sleep', 'm', '--level', 'checkpoint');
            assert.notEqual(r.code, 0);
            assert.match(r.stderr, /No space left on device/);
            assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
            await h.waitState(dir, 'm', 'stopped');
            const e = await row();
            assert.match(e.reason, /checkpoint failed: 'criu dump .*' exited 1: Error \(criu\/image\.c\): Can't write images: No space left on device/);
            await h.waitFor(() => !h.pidAlive(pid) && !h.pidAlive(gpuPid), { what: 'the engine gone on the pod' });
            await h.waitFor(() => !fs.existsSync(images), { what: 'the failed images removed on the pod' });
            assert.deepEqual(calls(localCalls), [], "this machine's tools ran");
        });

        await t.test('ssh dropping mid-dump leaves the model stopped, never half checkpointed', async () => {
            fs.rmSync(diskFull);
            const up = await yard('start', 'm', '--wait');
            assert.equal(up.code, 0, up.stderr);
            const pid2 = (await row()).pid;
            const gpuPid2 = Number(fs.readFileSync(ledger, 'utf8').trim().split(/\s+/)[0]);
            assert.ok(pid2 > 0 && h.pidAlive(pid2) && pid2 !== pid);
            fs.writeFileSync(sshDrop, '');
            const r = await yard('sleep', 'm', '--level', 'checkpoint');
            assert.notEqual(r.code, 0);
            assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
            await h.waitState(dir, 'm', 'stopped', 30000);
            const e = await row();
            assert.match(e.reason, /^checkpoint failed: .*; stopping it to free its GPU memory$/);
            assert.ok(!e.reason.includes('\n'));
            await h.waitFor(() => !h.pidAlive(pid2) && !h.pidAlive(gpuPid2), {
                what: 'the dumped engine gone on the pod',
            });
            await h.waitFor(() => !fs.existsSync(images), { what: 'the images removed on the pod' });
            assert.deepEqual(calls(localCalls), [], "this machine's tools ran");
        });
    } finally {
        await d.stop();
    }
});
