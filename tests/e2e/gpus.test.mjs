// `yard gpus`: the GPU inventory and which instance holds what.
//
//   - declared GPUs (`gpus:` in the config) whose used memory comes from the mock
//     engines' ledger (`gpu_ledger:`): totals, used and free per GPU, each process
//     mapped to its model, a process that is not yard's, stale and out-of-range
//     ledger lines ignored; a `--fail fork-child` engine whose child holds the
//     memory: the child's pid maps to the model, and goes with `yard stop`
//   - no declared GPUs and `tools.nvidia_smi` pointing at the stand-in
//     (tests/e2e/fixtures/nvidia-smi, GPUs from YARD_FAKE_GPUS): source
//     "nvidia-smi"; no devices; no driver
//
// The table and the JSON are described in docs/gpu.md.

import { test } from 'node:test';
import path from 'node:path';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import {
    assert,
    ps,
    tmpdir,
    freePort,
    writeConfig,
    startDaemon,
    startMockEngine,
    waitFor,
    yard,
    yardJson,
    pidAlive,
    pgidOf,
    YARD_SRC_DIR,
} from './lib/harness.mjs';
import { mockCmd, tcpAccepts, yardOk } from './lib/router-helpers.mjs';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const NVSMI = path.join(YARD_SRC_DIR, 'tests/e2e/fixtures/nvidia-smi');

/** A daemon on `top` (extra top-level YAML) and `models`, with env for its process. */
async function daemon({ top = '', models = {}, env = {} }) {
    const dir = tmpdir();
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n${top}`;
    yaml += `defaults: ${JSON.stringify({ stop_timeout: '2s', startup_timeout: '30s' })}\n`;
    yaml += 'models:\n';
    for (const [name, body] of Object.entries(models)) yaml += `  ${name}: ${JSON.stringify(body)}\n`;
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir, env });
    await waitFor(() => tcpAccepts(port), { timeoutMs: 5000, what: `yard listening on ${port}` });
    return { dir, d };
}

const gpusJson = (dir) => yardJson(['gpus', '--json'], { stateDir: dir });
const gpusTable = (dir) => yardOk(dir, ['gpus']);
const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);
const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A pid that is certainly not running: a process that has exited and been reaped. */
function deadPid() {
    const r = spawnSync('true');
    return r.pid;
}

test('declared GPUs + ledger: memory per GPU, processes mapped to models, fork-child holder, stale lines', async () => {
    const ledgerDir = tmpdir('yard-ledger-');
    const ledger = path.join(ledgerDir, 'ledger');
    // Before anything runs: a line of a dead process (stale) and one of a live
    // process on a GPU that is not declared. Neither counts.
    const dead = deadPid();
    assert.ok(!pidAlive(dead));
    fs.writeFileSync(ledger, `${dead} 0 ${5 * GiB} ghost\n${process.pid} 7 ${GiB} elsewhere\n`);

    const mock = (flavor, vram, extra = '') =>
        mockCmd(flavor, `--load-time 300ms --vram ${vram} --ledger ${ledger} ${extra}`);
    const { dir, d } = await daemon({
        top:
            `gpus: ${JSON.stringify([
                { index: 0, name: 'Mock A 40G', memory: '40GiB' },
                { index: 1, name: 'Mock B 24G', memory: '24GiB' },
            ])}\n` + `gpu_ledger: ${JSON.stringify(ledger)}\n`,
        models: {
            a: { engine: 'vllm', cmd: mock('vllm', '10GiB'), vram: '10GiB', gpus: [0] },
            b: { engine: 'llamacpp', cmd: mock('llamacpp', '6GiB'), vram: '6GiB', gpus: [1] },
            f: { engine: 'vllm', cmd: mock('vllm', '4GiB', '--fail fork-child'), vram: '4GiB', gpus: [0] },
        },
    });

    // Nothing running: all free, no processes.
    let inv = await gpusJson(dir);
    assert.equal(inv.source, 'declared');
    assert.deepEqual(
        inv.gpus.map((g) => [g.index, g.uuid, g.name, g.total, g.used, g.free, g.processes.length]),
        [
            [0, '', 'Mock A 40G', 40 * GiB, 0, 40 * GiB, 0],
            [1, '', 'Mock B 24G', 24 * GiB, 0, 24 * GiB, 0],
        ]
    );
    let table = await gpusTable(dir);
    assert.match(table, /^GPU\s+NAME\s+MEMORY\s+FREE\s*$/m);
    assert.match(table, /^0\s+Mock A 40G\s+0(\.0)?B?\S*\/40\.0GiB\s+40\.0GiB\s*$/m);
    assert.match(table, /^1\s+Mock B 24G\s+\S+\/24\.0GiB\s+24\.0GiB\s*$/m);
    assert.doesNotMatch(table, /pid/);

    // Three engines and one that is not yard's.
    for (const m of ['a', 'b', 'f']) await yardOk(dir, ['start', m, '--wait']);
    const foreign = startMockEngine({
        flavor: 'llamacpp',
        port: await freePort(),
        name: 'foreign',
        loadTime: '100ms',
        args: ['--vram', '2GiB', '--ledger', ledger],
    });
    const pidA = (await entry(dir, 'a')).pid;
    const pidB = (await entry(dir, 'b')).pid;
    const pidF = (await entry(dir, 'f')).pid;
    assert.equal((await entry(dir, 'a')).gpus, '0');
    assert.equal((await entry(dir, 'b')).gpus, '1');

    inv = await waitFor(
        async () => {
            const v = await gpusJson(dir);
            const n = v.gpus.reduce((k, g) => k + g.processes.length, 0);
            return n === 4 ? v : false;
        },
        { timeoutMs: 10000, what: 'four GPU processes' }
    );
    const [g0, g1] = inv.gpus;
    const by = (g, pid) => g.processes.find((p) => p.pid === pid);

    // fork-child: the memory is held by the child, in the engine's process group.
    const child = g0.processes.find((p) => p.model === 'f');
    assert.ok(child, `no process of f on GPU 0: ${JSON.stringify(g0.processes)}`);
    assert.notEqual(child.pid, pidF, "the child's pid, not the engine's, holds the memory");
    assert.equal(pgidOf(child.pid), pidF, `the holder ${child.pid} is not in f's group`);
    assert.equal(child.used, 4 * GiB);

    assert.deepEqual(by(g0, pidA), { pid: pidA, used: 10 * GiB, name: 'a', model: 'a' });
    assert.deepEqual(by(g1, pidB), { pid: pidB, used: 6 * GiB, name: 'b', model: 'b' });
    assert.deepEqual(by(g0, foreign.pid), { pid: foreign.pid, used: 2 * GiB, name: 'foreign', model: null });
    assert.equal(g0.processes.length, 3);
    assert.equal(g1.processes.length, 1);
    assert.equal(g0.used, 16 * GiB);
    assert.equal(g0.free, 24 * GiB);
    assert.equal(g1.used, 6 * GiB);
    assert.equal(g1.free, 18 * GiB);

    table = await gpusTable(dir);
    assert.match(table, /^0\s+Mock A 40G\s+16\.0GiB\/40\.0GiB\s+24\.0GiB\s*$/m);
    assert.match(table, /^1\s+Mock B 24G\s+6\.0GiB\/24\.0GiB\s+18\.0GiB\s*$/m);
    assert.match(table, new RegExp(`^  pid ${pidA} a 10\\.0GiB\\s+a\\s*$`, 'm'));
    assert.match(table, new RegExp(`^  pid ${pidB} b 6\\.0GiB\\s+b\\s*$`, 'm'));
    assert.match(table, new RegExp(`^  pid ${child.pid} f 4\\.0GiB\\s+f\\s*$`, 'm'));
    assert.match(table, new RegExp(`^  pid ${foreign.pid} foreign 2\\.0GiB\\s+${esc("(not yard's)")}\\s*$`, 'm'));
    // Processes are listed under their GPU: b's line comes after GPU 1's row.
    assert.ok(table.indexOf(`pid ${pidB} `) > table.search(/^1\s+Mock B/m), table);
    assert.ok(table.indexOf(`pid ${pidA} `) < table.search(/^1\s+Mock B/m), table);

    // Stopping f takes the child with it (SIGKILL to the group after stop_timeout):
    // its memory comes back, the others are unchanged.
    await yardOk(dir, ['stop', 'f']);
    await waitFor(() => !pidAlive(child.pid), { timeoutMs: 10000, what: `f's child ${child.pid} to go` });
    inv = await gpusJson(dir);
    assert.equal(inv.gpus[0].processes.find((p) => p.model === 'f'), undefined);
    assert.equal(inv.gpus[0].used, 12 * GiB);

    // A foreign process that goes away leaves a stale line only.
    await foreign.stop();
    await waitFor(async () => (await gpusJson(dir)).gpus[0].used === 10 * GiB, {
        timeoutMs: 5000,
        what: 'the foreign memory to come back',
    });
    await d.stop();
});

/** A daemon whose inventory is the nvidia-smi stand-in with two H100s; this test
 *  process is a foreign GPU process on GPU 1; model `a` (vLLM mock, 10 GiB) runs on
 *  GPU 1 and writes the ledger the stand-in reads. */
async function smiDaemon() {
    const ledger = path.join(tmpdir('yard-ledger-'), 'ledger');
    const y = await daemon({
        top: `tools: ${JSON.stringify({ nvidia_smi: NVSMI })}\n`,
        env: {
            YARD_FAKE_GPUS: '0,NVIDIA H100 80GB HBM3,81559;1,NVIDIA H100 80GB HBM3,81559',
            YARD_FAKE_GPU_APPS: `1,${process.pid},python3,2048`,
            YARD_FAKE_LEDGER: ledger,
        },
        models: {
            a: {
                engine: 'vllm',
                cmd: mockCmd('vllm', `--load-time 300ms --vram 10GiB --ledger ${ledger}`),
                vram: '10GiB',
                gpus: [1],
            },
        },
    });
    return { ...y, ledger };
}

const uuid = (i) => `GPU-00000000-0000-0000-0000-${String(i).padStart(12, '0')}`;

test('no declared GPUs, tools.nvidia_smi: the stand-in is the source; foreign processes are not yard\'s', async (t) => {
    const { dir, d } = await smiDaemon();
    const inv = await gpusJson(dir);
    if (inv.source === 'nvml') {
        t.skip('NVML is loadable on this host: yard reads it before nvidia-smi');
        await d.stop();
        return;
    }
    assert.equal(inv.source, 'nvidia-smi');
    assert.deepEqual(
        inv.gpus.map((g) => [g.index, g.uuid, g.name, g.total, g.used, g.free]),
        [
            [0, uuid(0), 'NVIDIA H100 80GB HBM3', 81559 * MiB, 0, 81559 * MiB],
            [1, uuid(1), 'NVIDIA H100 80GB HBM3', 81559 * MiB, 2048 * MiB, (81559 - 2048) * MiB],
        ]
    );
    assert.deepEqual(inv.gpus[0].processes, []);
    assert.deepEqual(inv.gpus[1].processes, [{ pid: process.pid, used: 2048 * MiB, name: 'python3', model: null }]);

    const table = await gpusTable(dir);
    assert.match(table, /^GPU\s+NAME\s+MEMORY\s+FREE\s*$/m);
    assert.match(table, /^0\s+NVIDIA H100 80GB HBM3\s+0\S*\/79\.6GiB\s+79\.6GiB\s*$/m);
    assert.match(table, /^1\s+NVIDIA H100 80GB HBM3\s+2\.0GiB\/79\.6GiB\s+77\.6GiB\s*$/m);
    assert.match(table, new RegExp(`^  pid ${process.pid} python3 2\\.0GiB\\s+${esc("(not yard's)")}\\s*$`, 'm'));

    // A model placed on GPU 1 by index gets CUDA_VISIBLE_DEVICES=1.
    await yardOk(dir, ['start', 'a', '--wait']);
    const a = await entry(dir, 'a');
    assert.equal(a.gpus, '1');
    assert.match(fs.readFileSync(`/proc/${a.pid}/environ`, 'latin1'), /(^|\0)CUDA_VISIBLE_DEVICES=1\0/);
    await d.stop();
});

test(
    'tools.nvidia_smi: an engine on the ledger the stand-in reads is mapped to its model',
    async (t) => {
        const { dir, d } = await smiDaemon();
        if ((await gpusJson(dir)).source === 'nvml') {
            t.skip('NVML is loadable on this host: yard reads it before nvidia-smi');
            await d.stop();
            return;
        }
        await yardOk(dir, ['start', 'a', '--wait']);
        const pidA = (await entry(dir, 'a')).pid;
        const inv = await waitFor(
            async () => {
                const v = await gpusJson(dir);
                return v.gpus[1].processes.length === 2 ? v : false;
            },
            { timeoutMs: 5000, what: "a's process on GPU 1" }
        );
        const g1 = inv.gpus[1];
        assert.deepEqual(
            g1.processes.find((p) => p.pid === pidA),
            { pid: pidA, used: 10240 * MiB, name: 'a', model: 'a' }
        );
        assert.equal(g1.used, (2048 + 10240) * MiB);
        assert.deepEqual(inv.gpus[0].processes, []);
        const table = await gpusTable(dir);
        assert.match(table, /^1\s+NVIDIA H100 80GB HBM3\s+12\.0GiB\/79\.6GiB\s+67\.6GiB\s*$/m);
        assert.match(table, new RegExp(`^  pid ${pidA} a 10\\.0GiB\\s+a\\s*$`, 'm'));

        await yardOk(dir, ['stop', 'a']);
        await waitFor(async () => (await gpusJson(dir)).gpus[1].processes.length === 1, {
            timeoutMs: 5000,
            what: "a's memory to come back",
        });
        await d.stop();
    }
);

test('tools.nvidia_smi with no devices, and with no driver', async (t) => {
    // One model, never started: an ordinary daemon.
    const models = { idle: { engine: 'llamacpp', cmd: mockCmd('llamacpp') } };
    // "No devices were found" (status 6): a driver without GPUs, not an error.
    const none = await daemon({
        top: `tools: ${JSON.stringify({ nvidia_smi: NVSMI })}\n`,
        env: { YARD_FAKE_GPUS: '' },
        models,
    });
    const inv = await gpusJson(none.dir);
    if (inv.source === 'nvml') {
        t.skip('NVML is loadable on this host: yard reads it before nvidia-smi');
        await none.d.stop();
        return;
    }
    assert.deepEqual(inv, { source: 'nvidia-smi', gpus: [], pods: [] });
    assert.equal((await gpusTable(none.dir)).trim(), 'no GPUs found (source: nvidia-smi)');
    await none.d.stop();

    // No driver (status 9): `yard gpus` fails with nvidia-smi's words.
    const broken = await daemon({
        top: `tools: ${JSON.stringify({ nvidia_smi: NVSMI })}\n`,
        env: { YARD_FAKE_GPUS: undefined },
        models,
    });
    for (const args of [['gpus'], ['gpus', '--json']]) {
        const r = await yard(args, { stateDir: broken.dir });
        assert.equal(r.code, 1, `yard ${args.join(' ')}: ${r.stdout}${r.stderr}`);
        assert.equal(r.stdout, '');
        assert.match(r.stderr, /status 9/);
        assert.match(r.stderr, /couldn't communicate with the NVIDIA driver/);
    }
    // The daemon itself is fine.
    assert.deepEqual(
        (await ps(broken.dir)).map((e) => [e.name, e.state]),
        [['idle', 'stopped']]
    );
    await broken.d.stop();
});
