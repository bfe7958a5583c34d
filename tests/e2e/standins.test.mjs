// The stand-ins for cuda-checkpoint and CRIU (tools/standins/) driven directly against
// real mock engines, no daemon: they take the real tools' command lines, refuse what
// the real tools refuse, and act on the mock's memory ledger and process. The vLLM
// sleep endpoints the daemon's sleep plans call are checked here too, end to end.
// See docs/engine.md, "Stand-ins".

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
    YARD_SRC_DIR,
    freePort,
    httpGet,
    httpPost,
    httpProbe,
    pidAlive,
    sanitizerReport,
    startMockEngine,
    tmpdir,
    waitFor,
} from './lib/harness.mjs';

const CUDA_CHECKPOINT = path.join(YARD_SRC_DIR, 'tools/standins/cuda-checkpoint');
const CRIU = path.join(YARD_SRC_DIR, 'tools/standins/criu');
const VRAM = 4 * 1024 ** 3;

/** Runs a stand-in with the test's state dir: {code, out, err}. */
function tool(bin, args, stateDir) {
    const r = spawnSync(bin, args, {
        env: { ...process.env, YARD_STANDIN_STATE: stateDir },
        encoding: 'utf8',
        timeout: 30000,
    });
    if (r.error) throw r.error;
    return { code: r.status, out: r.stdout, err: r.stderr };
}

const cuda = (args, dir) => tool(CUDA_CHECKPOINT, args, dir);
const criu = (args, dir) => tool(CRIU, args, dir);

/** Ledger lines as {pid: bytes}. */
function ledger(file) {
    const out = {};
    let text = '';
    try {
        text = fs.readFileSync(file, 'utf8');
    } catch {
        return out;
    }
    for (const line of text.split('\n')) {
        const f = line.split(' ');
        if (f.length >= 4) out[Number(f[0])] = Number(f[2]);
    }
    return out;
}

/** /proc/PID/stat state letter, or null. */
function procState(pid) {
    try {
        const t = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return t.slice(t.lastIndexOf(')') + 2)[0];
    } catch {
        return null;
    }
}

async function startReady(flavor, { args = [], env } = {}) {
    const dir = tmpdir('yard-standin-');
    const port = await freePort();
    const ledgerFile = path.join(dir, 'ledger');
    const engine = startMockEngine({
        flavor,
        port,
        name: 'm',
        loadTime: '100ms',
        args: ['--vram', '4GiB', '--tokens-per-sec', '0', '--warmup-time', '0s', '--ledger', ledgerFile, ...args],
        env,
    });
    const base = `http://127.0.0.1:${port}`;
    await waitFor(
        async () => {
            if (!pidAlive(engine.pid)) throw new Error(`engine exited:\n${engine.logText()}`);
            return (await httpProbe(`${base}/health`, { timeoutMs: 500 })).status === 200;
        },
        { timeoutMs: 10000, what: `${flavor} mock ready` }
    );
    return { engine, base, dir, ledgerFile, state: path.join(dir, 'standins') };
}

const completion = (base) => httpPost(`${base}/v1/completions`, { model: 'm', prompt: 'hi', max_tokens: 1 });

function assertClean(engine) {
    const report = sanitizerReport(engine.logText());
    assert.equal(report, null, `sanitizer report in the mock engine's log:\n${report}`);
}

describe('stand-ins', () => {
    test('vllm sleep endpoints: level 1 keeps 5%, wake restores, is_sleeping follows', async () => {
        const { engine, base, ledgerFile } = await startReady('vllm', {
            args: ['--enable-sleep-mode'],
            env: { VLLM_SERVER_DEV_MODE: '1' },
        });
        assert.equal((await httpPost(`${base}/sleep?level=1`, '')).status, 200);
        assert.deepEqual(JSON.parse((await httpGet(`${base}/is_sleeping`)).body), { is_sleeping: true });
        assert.equal(ledger(ledgerFile)[engine.pid], Math.floor(VRAM / 100) * 5);
        assert.equal((await httpPost(`${base}/wake_up`, '')).status, 200);
        assert.deepEqual(JSON.parse((await httpGet(`${base}/is_sleeping`)).body), { is_sleeping: false });
        assert.equal(ledger(ledgerFile)[engine.pid], VRAM);
        assert.equal((await completion(base)).status, 200);
        await engine.stop();
        assertClean(engine);
    });

    test('cuda-checkpoint --toggle frees all memory of a llama-server and brings it back', async () => {
        const { engine, base, ledgerFile, state } = await startReady('llamacpp');
        const pid = String(engine.pid);
        assert.equal(ledger(ledgerFile)[engine.pid], VRAM);
        assert.deepEqual(cuda(['--get-state', '--pid', pid], state), { code: 0, out: 'running\n', err: '' });

        assert.equal(cuda(['--toggle', '--pid', pid], state).code, 0);
        assert.equal(ledger(ledgerFile)[engine.pid], undefined, 'the ledger line is gone');
        assert.equal(cuda(['--get-state', '--pid', pid], state).out, 'checkpointed\n');
        const refused = await completion(base);
        assert.equal(refused.status, 500);
        assert.match(refused.body, /CUDA is checkpointed/);
        assert.ok(pidAlive(engine.pid), 'the process stays, only its GPU memory went');

        assert.equal(cuda(['--toggle', '--pid', pid], state).code, 0);
        assert.equal(ledger(ledgerFile)[engine.pid], VRAM);
        assert.equal(cuda(['--get-state', '-p', pid], state).out, 'running\n');
        assert.equal((await completion(base)).status, 200);
        await engine.stop();
        assertClean(engine);
    });

    test('a sleeping vllm suspended and resumed keeps its sleep level', async () => {
        const { engine, base, ledgerFile, state } = await startReady('vllm', {
            args: ['--enable-sleep-mode'],
            env: { VLLM_SERVER_DEV_MODE: '1' },
        });
        const pid = String(engine.pid);
        assert.equal((await httpPost(`${base}/sleep?level=1`, '')).status, 200);
        assert.equal(cuda(['--toggle', '--pid', pid], state).code, 0);
        assert.equal(ledger(ledgerFile)[engine.pid], undefined);
        assert.equal(cuda(['--toggle', '--pid', pid], state).code, 0);
        assert.equal(ledger(ledgerFile)[engine.pid], Math.floor(VRAM / 100) * 5);
        assert.equal((await httpPost(`${base}/wake_up`, '')).status, 200);
        assert.equal(ledger(ledgerFile)[engine.pid], VRAM);
        await engine.stop();
        assertClean(engine);
    });

    test('cuda-checkpoint rejects what the real tool rejects', async () => {
        const { engine, state } = await startReady('llamacpp');
        const pid = String(engine.pid);
        const cases = [
            [['--toggle', '--pid', pid, '--timeout', '10'], 1, /'--timeout' is only valid with '--action lock'/],
            [['--toggle'], 1, /'--pid <pid>' is required/],
            [['--pid', pid], 1, /no operation given/],
            [['--toggle', '--get-state', '--pid', pid], 1, /only one operation/],
            [['--action', 'suspend', '--pid', pid], 1, /unknown action 'suspend'/],
            [['--toggle', '--pid', pid, '--all'], 1, /unknown option '--all'/],
            [['--toggle', '--pid', '-5'], 1, /invalid pid/],
            [['--toggle', '--pid', '999999999'], 1, /"invalid argument" \(no such process\)/],
            [['--toggle', '--pid', String(process.pid)], 3, /"initialization error" \(not a CUDA process\)/],
            [['--action', 'unlock', '--pid', pid], 145, /the process is running/],
            [['--action', 'checkpoint', '--pid', pid], 145, /the process is running/],
        ];
        for (const [args, code, message] of cases) {
            const r = cuda(args, state);
            assert.equal(r.code, code, `cuda-checkpoint ${args.join(' ')}: ${r.err}`);
            assert.match(r.err, message, `cuda-checkpoint ${args.join(' ')}`);
        }
        // lock takes a timeout; a locked process cannot be toggled until unlocked
        assert.equal(cuda(['--action', 'lock', '--pid', pid, '--timeout', '500'], state).code, 0);
        assert.equal(cuda(['--get-state', '--pid', pid], state).out, 'locked\n');
        assert.equal(cuda(['--toggle', '--pid', pid], state).code, 145);
        assert.equal(cuda(['--action', 'unlock', '--pid', pid], state).code, 0);
        assert.equal(cuda(['--help'], state).code, 0);
        await engine.stop();
    });

    test('criu dump stops a CUDA-checkpointed tree, restore continues it with the same pids', async () => {
        // fork-child: the GPU memory is held by a child, as vLLM's EngineCore holds it
        const { engine, base, dir, ledgerFile, state } = await startReady('vllm', { args: ['--fail', 'fork-child'] });
        const holders = Object.keys(ledger(ledgerFile)).map(Number);
        assert.equal(holders.length, 1);
        const child = holders[0];
        assert.notEqual(child, engine.pid);
        const images = path.join(dir, 'checkpoints', 'm');
        const pidfile = path.join(dir, 'restored.pid');
        const dumpArgs = ['dump', '--tree', String(engine.pid), '--images-dir', images, '--shell-job', '--tcp-close',
            '--ext-unix-sk', '--file-locks', '--link-remap', '--manage-cgroups=soft'];
        const restoreArgs = ['restore', '--images-dir', images, '--shell-job', '--restore-detached', '--pidfile', pidfile,
            '--tcp-close', '--ext-unix-sk', '--file-locks', '--link-remap', '--manage-cgroups=soft'];

        let r = criu(dumpArgs, state);
        assert.equal(r.code, 1);
        assert.match(r.err, /Can't open images directory/);
        fs.mkdirSync(images, { recursive: true });
        r = criu(dumpArgs, state);
        assert.equal(r.code, 1);
        assert.match(r.err, new RegExp(`Can't dump task ${child}: it holds CUDA device memory`));

        // the parent holds no GPU memory: not a CUDA process; the child is
        r = cuda(['--toggle', '--pid', String(engine.pid)], state);
        assert.equal(r.code, 3);
        assert.equal(cuda(['--toggle', '--pid', String(child)], state).code, 0);
        assert.deepEqual(ledger(ledgerFile), {});

        r = criu(dumpArgs, state);
        assert.equal(r.code, 0, r.err);
        assert.equal(procState(engine.pid), 'T');
        assert.equal(procState(child), 'T');
        assert.equal((await httpProbe(`${base}/health`, { timeoutMs: 300 })).error, 'ETIMEDOUT');
        assert.ok(fs.existsSync(path.join(images, 'inventory.img')));

        r = criu(restoreArgs, state);
        assert.equal(r.code, 0, r.err);
        assert.equal(fs.readFileSync(pidfile, 'utf8').trim(), String(engine.pid));
        assert.notEqual(procState(engine.pid), 'T');
        assert.notEqual(procState(child), 'T');
        assert.equal((await httpProbe(`${base}/health`)).status, 200);
        assert.equal(cuda(['--get-state', '--pid', String(child)], state).out, 'checkpointed\n');
        assert.equal(cuda(['--toggle', '--pid', String(child)], state).code, 0);
        assert.equal(ledger(ledgerFile)[child], VRAM);
        assert.equal((await completion(base)).status, 200);

        // restoring again: the pids are taken by running processes
        r = criu(restoreArgs, state);
        assert.equal(r.code, 1);
        assert.match(r.err, /Can't fork for \d+: File exists/);
        await engine.stop(300); // the child ignores SIGTERM: SIGKILL to the group
    });

    test('criu rejects what the real tool rejects', async () => {
        const dir = tmpdir('yard-standin-');
        const cases = [
            [[], /no command given/],
            [['snapshot'], /unknown command 'snapshot'/],
            [['dump', '--images-dir', dir], /Tree ID required/],
            [['dump', '--tree', String(process.pid), '--images-dir', dir, '--no-io-uring'], /unrecognized option '--no-io-uring'/],
            [['dump', '--tree', String(process.pid), '--images-dir', dir, '--manage-cgroups=all'], /unknown cgroup mode 'all'/],
            [['dump', '--tree', String(process.pid), '--images-dir', dir, '--shell-job=yes'], /doesn't allow an argument/],
            [['dump', '--tree', '999999999', '--images-dir', dir], /Can't seize 999999999/],
            [['dump', '--tree', String(process.pid), '--images-dir', path.join(dir, 'nope')], /Can't open images directory/],
            [['restore', '--images-dir', dir, '--restore-detached'], /inventory\.img/],
            [['restore', '--images-dir'], /requires an argument/],
        ];
        for (const [args, message] of cases) {
            const r = criu(args, path.join(dir, 'state'));
            assert.equal(r.code, 1, `criu ${args.join(' ')}: ${r.err}`);
            assert.match(r.err, message, `criu ${args.join(' ')}`);
        }
        assert.equal(criu(['check'], dir).code, 0);
    });
});
