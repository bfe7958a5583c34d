// `yard models [--pod NAME] [--json]`: which models of the catalog fit where
// (docs/catalog.md).
//
// Without sshd (always runs): a daemon whose local host declares one A10G
//   - the built-in catalog: small models fit on 1 GPU, the rest say why not
//     (GPU type, memory per GPU, GPU count); the table and the stable JSON
//   - `--pod local`, an unknown pod (one line naming the known pods), usage
//   - a custom `catalog:` file (relative to the config's directory) replaces
//     the built-in one; an edit is seen by the next call without a restart
//   - a malformed catalog file: one line naming the file and line:column; a
//     catalog with a bad value names the value; a missing file says so
//   - with no daemon running: one line, exit 1
// With a real sshd (lib/sshd.mjs, as pod.test.mjs): a pod with two stand-in
// H100 80GB GPUs, then `yard models --pod gpu1 --json` with the built-in
// catalog and, after a restart on another config, a custom one.
// The sshd part skips, saying why, when not root or sshd or ssh is missing.

import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd, sshControl } from './lib/sshd.mjs';

const { assert } = h;
const FIXTURES = path.join(h.YARD_SRC_DIR, 'tests/e2e/fixtures');
const GPUS = '0,NVIDIA H100 80GB HBM3,81559;1,NVIDIA H100 80GB HBM3,81559';
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const UNKNOWN_TAIL = "(add one with 'yard pod add NAME --ssh \"ssh ...\"')";

const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the pod part of the models e2e tests: ${SKIP}`);

const byId = (host, id) => {
    const m = host.models.find((x) => x.id === id);
    assert.ok(m, `${id} not in ${host.models.map((x) => x.id).join(', ')}`);
    return m;
};

const CUSTOM = {
    models: {
        'org/small': {
            name: 'Small',
            configs: [{ gpu_count: 1, vram: '8GiB', args: ['--max-model-len', '4096'], env: { A: '1' } }],
        },
        'org/needs-h100': {
            name: 'Needs H100',
            engine: 'sglang',
            notes: 'hopper only',
            configs: [{ gpuCount: 1, gpuTypes: ['H100'], args: ['--tp', '1'] }],
        },
        'org/huge': {
            name: 'Huge',
            configs: [
                { gpu_count: 2, vram: '90GiB', args: ['--tensor-parallel-size', '2'] },
                { gpu_count: 16, args: ['--tensor-parallel-size', '16'] },
            ],
        },
    },
};

test('yard models: the local host, catalogs and errors (no sshd needed)', async (t) => {
    const dir = h.tmpdir('yard-models-');
    const port = await h.freePort();
    const catalog = path.join(dir, 'cat.json');
    fs.writeFileSync(catalog, JSON.stringify(CUSTOM, null, 2));
    const base =
        `listen: 127.0.0.1:${port}\n` +
        'gpus: [{index: 0, name: "NVIDIA A10G", memory: 23028MiB}]\n' +
        'models:\n  a:\n    engine: vllm\n    cmd: "x --port ${PORT}"\n';
    const builtinCfg = h.writeConfig(dir, base, 'builtin.yaml');
    // Relative: found next to the config, whatever the daemon's working directory.
    const customCfg = h.writeConfig(dir, `catalog: cat.json\n${base}`, 'custom.yaml');
    const yard = (...args) => h.yard(args, { stateDir: dir });
    let d = await h.startDaemon({ config: builtinCfg, stateDir: dir });
    try {
        await t.test('the built-in catalog on one A10G', async () => {
            const res = await h.yardJson(['models', '--json'], { stateDir: dir });
            assert.deepEqual(Object.keys(res), ['catalog', 'hosts']);
            assert.equal(res.catalog, 'built-in');
            assert.equal(res.hosts.length, 1);
            const local = res.hosts[0];
            assert.deepEqual(Object.keys(local), ['host', 'gpus', 'error', 'models']);
            assert.equal(local.host, 'local');
            assert.equal(local.error, null);
            assert.deepEqual(local.gpus, [
                { index: 0, name: 'NVIDIA A10G', memory_total: 23028 * MiB, memory_used: 0 },
            ]);
            assert.ok(local.models.length >= 10, `${local.models.length} models`);

            const q7 = byId(local, 'Qwen/Qwen2.5-7B-Instruct');
            assert.deepEqual(Object.keys(q7), ['id', 'name', 'engine', 'notes', 'fits', 'config', 'reason']);
            assert.equal(q7.fits, true);
            assert.equal(q7.reason, null);
            assert.equal(q7.engine, 'vllm');
            assert.deepEqual(Object.keys(q7.config), ['gpu_count', 'gpu_types', 'vram', 'args', 'env', 'notes']);
            assert.equal(q7.config.gpu_count, 1);
            assert.equal(q7.config.vram, 20 * GiB);
            assert.ok(q7.config.args.includes('--max-model-len'), q7.config.args.join(' '));

            const big = byId(local, 'openai/gpt-oss-120b');
            assert.equal(big.fits, false);
            assert.equal(big.config, null);
            assert.equal(big.reason, "needs H100, H200 or B200, host has 'NVIDIA A10G'");
            assert.equal(
                byId(local, 'Qwen/Qwen3-Coder-30B-A3B-Instruct').reason,
                'needs 70 GiB per GPU, GPUs have 22.5 GiB',
            );
            assert.equal(byId(local, 'Qwen/Qwen2.5-72B-Instruct').reason, 'needs 2 GPUs, host has 1');
        });

        await t.test('the table', async () => {
            const r = await yard('models');
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stderr, '');
            const lines = r.stdout.trimEnd().split('\n');
            assert.match(lines[0], /^HOST\s+MODEL\s+FITS\s+GPUS\s+VRAM\s+WHY NOT$/);
            const q7 = lines.find((l) => l.includes('Qwen/Qwen2.5-7B-Instruct'));
            assert.match(q7, /^local\s+Qwen\/Qwen2\.5-7B-Instruct\s+yes\s+1\s+20\.0GiB\s+-$/);
            const q72 = lines.find((l) => l.includes('Qwen/Qwen2.5-72B-Instruct'));
            assert.match(q72, /^local\s+Qwen\/Qwen2\.5-72B-Instruct\s+no\s+-\s+-\s+needs 2 GPUs, host has 1$/);
        });

        await t.test('--pod local, an unknown pod, usage', async () => {
            const res = await h.yardJson(['models', '--pod', 'local', '--json'], { stateDir: dir });
            assert.deepEqual(
                res.hosts.map((x) => x.host),
                ['local'],
            );
            let r = await yard('models', '--pod', 'nope');
            assert.equal(r.code, 1);
            assert.equal(r.stdout, '');
            assert.equal(r.stderr, `yard: unknown pod 'nope'; known pods: none ${UNKNOWN_TAIL}\n`);
            r = await yard('models', 'extra');
            assert.equal(r.code, 2);
            assert.match(r.stderr, /unexpected argument 'extra'; name a pod with --pod NAME/);
            r = await yard('models', '--pod');
            assert.equal(r.code, 2);
            r = await yard('models', '--help');
            assert.equal(r.code, 0);
            assert.match(r.stdout, /^usage: yard models \[--pod NAME\] \[--json\]/);
        });

        await d.stop();
        d = await h.startDaemon({ config: customCfg, stateDir: dir });

        await t.test('a custom catalog file replaces the built-in one', async () => {
            const r = await yard('check', '-c', customCfg);
            assert.equal(r.code, 0, r.stderr);
            const res = await h.yardJson(['models', '--json'], { stateDir: dir });
            assert.equal(res.catalog, catalog);
            const local = res.hosts[0];
            assert.deepEqual(
                local.models.map((m) => m.id),
                ['org/small', 'org/needs-h100', 'org/huge'],
            );
            const small = local.models[0];
            assert.equal(small.name, 'Small');
            assert.equal(small.fits, true);
            assert.deepEqual(small.config, {
                gpu_count: 1,
                gpu_types: [],
                vram: 8 * GiB,
                args: ['--max-model-len', '4096'],
                env: { A: '1' },
                notes: null,
            });
            const h100 = local.models[1];
            assert.equal(h100.engine, 'sglang');
            assert.equal(h100.notes, 'hopper only');
            assert.equal(h100.reason, "needs H100, host has 'NVIDIA A10G'");
            assert.equal(local.models[2].reason, 'needs 2 GPUs, host has 1');
        });

        await t.test('an edited catalog is read again by the next call', async () => {
            const edited = structuredClone(CUSTOM);
            delete edited.models['org/huge'];
            fs.writeFileSync(catalog, JSON.stringify(edited));
            const res = await h.yardJson(['models', '--json'], { stateDir: dir });
            assert.deepEqual(
                res.hosts[0].models.map((m) => m.id),
                ['org/small', 'org/needs-h100'],
            );
        });

        await t.test('a malformed catalog: one line with the file and position', async () => {
            fs.writeFileSync(catalog, '{\n  "models": {\n    "org/x": {"configs": [}\n  }\n}\n');
            const r = await yard('models');
            assert.equal(r.code, 1);
            assert.equal(r.stdout, '');
            assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
            assert.ok(r.stderr.startsWith(`yard: ${catalog}:3:`), r.stderr);
            assert.match(r.stderr, /not valid JSON: /);
        });

        await t.test('a catalog with a bad value names it', async () => {
            fs.writeFileSync(catalog, JSON.stringify({ models: { 'org/x': { configs: [{ gpu_count: 0 }] } } }));
            let r = await yard('models', '--json');
            assert.equal(r.code, 1);
            assert.equal(
                r.stderr,
                `yard: ${catalog}: models["org/x"].configs[0]: 'gpu_count' must be a whole number from 1 to 64\n`,
            );
            fs.writeFileSync(catalog, JSON.stringify({ models: { 'org/x': { configs: [{ gpu_count: 1, vram: 'lots' }] } } }));
            r = await yard('models');
            assert.equal(r.code, 1);
            assert.match(r.stderr, /^yard: .*configs\[0\]: 'vram' must be the memory needed on each GPU/);
            fs.rmSync(catalog);
            r = await yard('models');
            assert.equal(r.code, 1);
            assert.equal(r.stderr, `yard: cannot read catalog '${catalog}': No such file or directory\n`);
        });

        await t.test('with no daemon running: one line, exit 1', async () => {
            await d.stop();
            const r = await yard('models');
            assert.equal(r.code, 1);
            assert.match(r.stderr, /^yard: no daemon running at .*\n$/);
        });
    } finally {
        if (!d.exited) await d.stop();
    }
});

test('yard models --pod against a real sshd', { skip: SKIP || false }, async (t) => {
    const sshd = await startSshd({
        keyEnv: { PATH: `${FIXTURES}:/usr/local/bin:/usr/bin:/bin`, YARD_FAKE_GPUS: GPUS },
    });
    const dir = h.tmpdir('yard-models-pod-');
    const port = await h.freePort();
    const base = `listen: 127.0.0.1:${port}\nmodels:\n  a:\n    engine: vllm\n    cmd: "x --port \${PORT}"\n`;
    const builtinCfg = h.writeConfig(dir, base, 'builtin.yaml');
    const catalog = path.join(dir, 'cat.json');
    fs.writeFileSync(catalog, JSON.stringify(CUSTOM));
    const customCfg = h.writeConfig(dir, `catalog: ${catalog}\n${base}`, 'custom.yaml');
    const yard = (...args) => h.yard(args, { stateDir: dir });
    let d = await h.startDaemon({ config: builtinCfg, stateDir: dir });
    try {
        let r = await yard('pod', 'add', 'gpu1', '--ssh', sshd.sshCmd);
        assert.equal(r.code, 0, r.stderr);

        await t.test('the built-in catalog on two H100 80GB', async () => {
            const res = await h.yardJson(['models', '--pod', 'gpu1', '--json'], { stateDir: dir });
            assert.equal(res.hosts.length, 1);
            const pod = res.hosts[0];
            assert.equal(pod.host, 'gpu1');
            assert.equal(pod.error, null);
            assert.deepEqual(
                pod.gpus.map((g) => [g.name, g.memory_total]),
                [
                    ['NVIDIA H100 80GB HBM3', 81559 * MiB],
                    ['NVIDIA H100 80GB HBM3', 81559 * MiB],
                ],
            );
            const q7 = byId(pod, 'Qwen/Qwen2.5-7B-Instruct');
            assert.equal(q7.fits, true);
            assert.equal(q7.config.gpu_count, 1);
            // The 1-GPU config wants an H200; the 2-GPU one fits and is chosen.
            const q32 = byId(pod, 'Qwen/Qwen2.5-32B-Instruct');
            assert.equal(q32.fits, true);
            assert.equal(q32.config.gpu_count, 2);
            assert.deepEqual(q32.config.args.slice(0, 2), ['--tensor-parallel-size', '2']);
            // Fewest GPUs that fit: 1 of the 1/2/4/8 configs.
            const oss = byId(pod, 'openai/gpt-oss-120b');
            assert.equal(oss.fits, true);
            assert.equal(oss.config.gpu_count, 1);
            assert.deepEqual(oss.config.gpu_types, ['H100', 'H200', 'B200']);
            const coder = byId(pod, 'Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8');
            assert.equal(coder.fits, false);
            assert.equal(coder.config, null);
            assert.equal(coder.reason, 'needs 8 GPUs, pod has 2');
            assert.equal(
                byId(pod, 'meta-llama/Llama-3.1-70B-Instruct').reason,
                "needs H200 or B200, pod has 'NVIDIA H100 80GB HBM3'",
            );
        });

        await t.test('without --pod: local and every pod', async () => {
            const res = await h.yardJson(['models', '--json'], { stateDir: dir });
            assert.deepEqual(
                res.hosts.map((x) => x.host),
                ['local', 'gpu1'],
            );
            const r2 = await yard('models', '--pod', 'gpu1');
            assert.equal(r2.code, 0, r2.stderr);
            assert.match(r2.stdout, /^gpu1\s+Qwen\/Qwen3-Coder-480B-A35B-Instruct-FP8\s+no\s+-\s+-\s+needs 8 GPUs, pod has 2$/m);
        });

        await t.test('an unknown pod names the known ones', async () => {
            r = await yard('models', '--pod', 'gpu2', '--json');
            assert.equal(r.code, 1);
            assert.equal(r.stderr, `yard: unknown pod 'gpu2'; known pods: gpu1 ${UNKNOWN_TAIL}\n`);
        });

        await d.stop();
        d = await h.startDaemon({ config: customCfg, stateDir: dir });

        await t.test('a custom catalog on the pod', async () => {
            const res = await h.yardJson(['models', '--pod', 'gpu1', '--json'], { stateDir: dir });
            assert.equal(res.catalog, catalog);
            const pod = res.hosts[0];
            assert.equal(byId(pod, 'org/small').fits, true);
            const h100 = byId(pod, 'org/needs-h100');
            assert.equal(h100.fits, true);
            assert.deepEqual(h100.config.args, ['--tp', '1']);
            assert.deepEqual(h100.config.gpu_types, ['H100']);
            assert.equal(byId(pod, 'org/huge').reason, 'needs 90 GiB per GPU, GPUs have 79.6 GiB');
        });

        await t.test('a malformed catalog with a pod', async () => {
            fs.writeFileSync(catalog, '{"models": {"org/x": }}');
            r = await yard('models', '--pod', 'gpu1');
            assert.equal(r.code, 1);
            assert.ok(r.stderr.startsWith(`yard: ${catalog}:1:`), r.stderr);
            assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
        });
    } finally {
        const ctl = path.join(dir, 'ssh', 'gpu1.sock');
        if (fs.existsSync(ctl)) sshControl(ctl, sshd.sshCmd, 'exit');
        if (!d.exited) await d.stop();
        await sshd.proc.stop();
    }
});
