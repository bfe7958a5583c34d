// `yard pod add|ls|rm` against a real OpenSSH server (docs/pods.md, "Pods").
//
// The file starts its own sshd on 127.0.0.1 (lib/sshd.mjs) whose sessions with
// the client key get a PATH with the stand-in nvidia-smi
// (tests/e2e/fixtures/nvidia-smi) first and YARD_FAKE_GPUS declaring two GPUs
// (a second key gets neither), then a daemon, and checks:
//   - pod add probes the pod, detects its 2 GPUs and records it
//   - pod ls (table and --json) shows it reachable with its GPUs and the models
//     configured for it
//   - pod ls probes again: GPU memory in use is refreshed; a pod whose sshd
//     stopped is shown unreachable, and reachable again once sshd is back
//   - a second add of the same name and a hostile name are refused
//   - a pod nobody answers for (wrong port) is a transport error; nothing recorded
//   - a pod without nvidia-smi is recorded with no GPUs, and says so
//   - the record survives a daemon restart
//   - pod rm is refused while a model of the pod is not stopped; --force stops
//     the model, forgets the pod and stops its ssh master (`ssh -O check`)
//   - with no daemon running: one line, exit 1
// It skips, saying why, when it does not run as root or sshd or ssh is missing.

import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd, sshControl } from './lib/sshd.mjs';

const { assert } = h;
const FIXTURES = path.join(h.YARD_SRC_DIR, 'tests/e2e/fixtures');
const GPUS = '0,NVIDIA H100 80GB HBM3,81559;1,NVIDIA H100 80GB HBM3,81559';
const MiB = 1024 ** 2;

const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the pod e2e tests: ${SKIP}`);

async function startYard(stateDir, config) {
    return h.startDaemon({ config, stateDir });
}

test('yard pod against a real sshd', { skip: SKIP || false }, async (t) => {
    const dir = h.tmpdir('yard-pod-');
    const ledger = path.join(dir, 'gpu-ledger');
    const sshd = await startSshd({
        keyEnv: {
            PATH: `${FIXTURES}:/usr/local/bin:/usr/bin:/bin`,
            YARD_FAKE_GPUS: GPUS,
            YARD_FAKE_LEDGER: ledger,
        },
    });
    const port = await h.freePort();
    // p runs on gpu1 and never gets ready (nothing answers its health check)
    const config = h.writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\nmodels:\n  a:\n    engine: vllm\n    cmd: "x --port \${PORT}"\n` +
            `  p:\n    engine: generic\n    cmd: "sleep 600"\n    pod: gpu1\n` +
            `    restart: never\n`,
    );
    let d = await startYard(dir, config);
    const yard = (...args) => h.yard(args, { stateDir: dir });
    const control = path.join(dir, 'ssh', 'gpu1.sock');
    try {
        await t.test('pod add probes the pod and detects 2 GPUs', async () => {
            const r = await yard('pod', 'add', 'gpu1', '--ssh', sshd.sshCmd, '--models-path', '/models');
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stdout, "added pod 'gpu1' with 2 GPUs\n");
            assert.equal(r.stderr, '');
            assert.ok(fs.statSync(control).isSocket(), 'the ssh master runs');
        });

        await t.test('pod ls shows it reachable with its GPUs', async () => {
            const r = await yard('pod', 'ls');
            assert.equal(r.code, 0, r.stderr);
            const lines = r.stdout.trimEnd().split('\n');
            assert.equal(lines.length, 2, r.stdout);
            assert.match(lines[0], /^NAME\s+REACHABLE\s+GPUS\s+MODELS\s+SSH$/);
            assert.match(lines[1], /^gpu1\s+yes\s+2\s+p:stopped\s+ssh -F \/dev\/null -p \d+ /);
            const pods = await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir });
            assert.equal(pods.length, 1);
            const p = pods[0];
            assert.deepEqual(Object.keys(p).sort(), [
                'gpus',
                'last_seen_ms',
                'models',
                'models_path',
                'name',
                'reachable',
                'ssh',
            ]);
            assert.equal(p.name, 'gpu1');
            assert.equal(p.ssh, sshd.sshCmd);
            assert.equal(p.models_path, '/models');
            assert.equal(p.reachable, true);
            assert.ok(p.last_seen_ms > Date.now() - 60000 && p.last_seen_ms <= Date.now());
            assert.deepEqual(p.models, [{ name: 'p', state: 'stopped' }]);
            assert.deepEqual(p.gpus, [
                { index: 0, name: 'NVIDIA H100 80GB HBM3', memory_total: 81559 * MiB, memory_used: 0 },
                { index: 1, name: 'NVIDIA H100 80GB HBM3', memory_total: 81559 * MiB, memory_used: 0 },
            ]);
        });

        await t.test('a second pod of the same name is refused', async () => {
            const r = await yard('pod', 'add', 'gpu1', '--ssh', sshd.sshCmd);
            assert.equal(r.code, 1);
            assert.equal(
                r.stderr,
                "yard: pod 'gpu1' already exists; remove it first with 'yard pod rm gpu1'\n",
            );
        });

        await t.test('a hostile name is refused', async () => {
            for (const name of ['../etc', 'a b', '.hidden', 'x;rm', '']) {
                const r = await yard('pod', 'add', name, '--ssh', sshd.sshCmd);
                assert.equal(r.code, 1, `${name}: ${r.stderr}`);
                assert.match(r.stderr, /^yard: bad pod name '.*': use 1 to 64 letters, digits/);
            }
            assert.deepEqual(fs.readdirSync(path.join(dir, 'ssh')), ['gpu1.sock']);
        });

        await t.test('an unreachable pod is a transport error and is not recorded', async () => {
            const wrong = await h.freePort();
            const r = await yard('pod', 'add', 'gone', '--ssh', sshd.cmdForPort(wrong));
            assert.equal(r.code, 1);
            assert.match(
                r.stderr,
                /^yard: cannot reach pod 'gone': .*Connection refused; nothing was recorded/,
            );
            assert.equal(r.stderr.trimEnd().split('\n').length, 1, 'one line');
            const pods = await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir });
            assert.deepEqual(
                pods.map((p) => p.name),
                ['gpu1'],
            );
        });

        await t.test('a pod without nvidia-smi is recorded with no GPUs', async () => {
            // plain_key's sessions have the default PATH: no stand-in there.
            const r = await yard('pod', 'add', 'cpu1', '--ssh', sshd.plainCmd, '--json');
            assert.equal(r.code, 0, r.stderr);
            const p = JSON.parse(r.stdout);
            assert.equal(p.name, 'cpu1');
            assert.equal(p.reachable, true);
            if (p.gpus.length === 0) {
                // (a machine with a real nvidia-smi in the default PATH reports its GPUs)
                assert.equal(
                    r.stderr,
                    "yard: recorded with no GPUs: command on pod 'cpu1' exited 3: " +
                        'nvidia-smi not found in PATH\n',
                );
            }
        });

        await t.test('the record survives a daemon restart', async () => {
            await d.stop();
            d = await startYard(dir, config);
            const pods = await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir });
            const p = pods.find((x) => x.name === 'gpu1');
            assert.ok(p, JSON.stringify(pods));
            assert.equal(p.gpus.length, 2);
            assert.equal(p.reachable, true);
        });

        await t.test('pod ls probes again: GPU memory in use is refreshed', async () => {
            // a live pid (this test's) holding 1 GiB of GPU 1, as a mock engine's ledger says
            fs.writeFileSync(ledger, `${process.pid} 1 ${1024 * MiB} test\n`);
            const pods = await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir });
            const p = pods.find((x) => x.name === 'gpu1');
            assert.deepEqual(
                p.gpus.map((g) => g.memory_used),
                [0, 1024 * MiB],
            );
            fs.rmSync(ledger);
        });

        await t.test('pod ls shows a pod unreachable while its sshd is down', async () => {
            const before = (await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir })).find(
                (x) => x.name === 'gpu1',
            );
            // the masters would keep the old connections: stop them with sshd
            sshControl(control, sshd.sshCmd, 'exit');
            sshControl(path.join(dir, 'ssh', 'cpu1.sock'), sshd.plainCmd, 'exit');
            await sshd.proc.stop();
            let r = await yard('pod', 'ls');
            assert.equal(r.code, 0, r.stderr);
            assert.match(r.stdout.split('\n')[1], /^cpu1\s+no\s+/);
            assert.match(r.stdout.split('\n')[2], /^gpu1\s+no\s+2\s+p:stopped\s+/);
            let pods = await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir });
            let p = pods.find((x) => x.name === 'gpu1');
            assert.equal(p.reachable, false);
            assert.equal(p.last_seen_ms, before.last_seen_ms, 'last seen: before sshd stopped');
            assert.equal(p.gpus.length, 2, 'the GPUs last seen are kept');

            await sshd.restart();
            pods = await h.yardJson(['pod', 'ls', '--json'], { stateDir: dir });
            p = pods.find((x) => x.name === 'gpu1');
            assert.equal(p.reachable, true);
            assert.ok(p.last_seen_ms > before.last_seen_ms);
            assert.equal(pods.find((x) => x.name === 'cpu1').reachable, true);
        });

        await t.test('pod rm is refused while a model of the pod runs', async () => {
            let r = await yard('start', 'p');
            assert.equal(r.code, 0, r.stderr);
            // once launched (a pid), so that the stop below does not race the launch
            const row = await h.waitFor(
                async () => (await h.ps(dir)).find((x) => x.name === 'p' && x.pid),
                { timeoutMs: 30000, intervalMs: 200, what: "p's engine launched" },
            );
            const state = row.state;
            assert.ok(['starting', 'ready'].includes(state), `p is ${state}`);
            r = await yard('pod', 'rm', 'gpu1');
            assert.equal(r.code, 1);
            assert.equal(
                r.stderr,
                "yard: pod 'gpu1' runs models: p; stop them first or use 'yard pod rm gpu1 --force'\n",
            );
            r = await yard('pod', 'ls');
            // (REACHABLE: a probe on a busy machine may take longer than its 10 s)
            assert.match(r.stdout.split('\n')[2], new RegExp(`^gpu1\\s+\\S+\\s+2\\s+p:${state}\\s+`));
        });

        await t.test('pod rm --force stops the models, forgets the pod, stops its master', async () => {
            assert.equal(sshControl(control, sshd.sshCmd, 'check').status, 0);
            let r = await yard('pod', 'rm', 'gpu1', '--force');
            assert.equal(r.code, 0, r.stderr);
            assert.equal(r.stdout, "stopped 'p'\nremoved pod 'gpu1'\n");
            assert.equal((await h.ps(dir)).find((x) => x.name === 'p').state, 'stopped');
            const c = sshControl(control, sshd.sshCmd, 'check');
            assert.notEqual(c.status, 0, 'no master');
            r = await yard('pod', 'rm', 'gpu1', '--force');
            assert.equal(r.code, 1);
            assert.equal(r.stderr, "yard: no pod named 'gpu1'; see 'yard pod ls'\n");
            r = await yard('pod', 'rm', 'cpu1');
            assert.equal(r.code, 0, r.stderr);
            r = await yard('pod', 'ls');
            assert.equal(r.code, 0, r.stderr);
            assert.match(r.stdout, /^no pods; add one with/);
        });

        await t.test('with no daemon running: one line, exit 1', async () => {
            await d.stop();
            const r = await yard('pod', 'ls');
            assert.equal(r.code, 1);
            assert.match(r.stderr, /^yard: no daemon running at .*\n$/);
        });
    } finally {
        for (const pod of ['gpu1', 'cpu1']) {
            const ctl = path.join(dir, 'ssh', `${pod}.sock`);
            if (fs.existsSync(ctl)) sshControl(ctl, pod === 'cpu1' ? sshd.plainCmd : sshd.sshCmd, 'exit');
        }
        if (!d.exited) await d.stop();
        await sshd.proc.stop();
    }
});

test('yard pod: usage errors and no daemon (no sshd needed)', async () => {
    const dir = h.tmpdir('yard-pod-cli-');
    const yard = (...args) => h.yard(args, { stateDir: dir });
    let r = await yard('pod', '--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^usage: yard pod add NAME --ssh "ssh ARGS\.\.\." \[--models-path P\]/);
    const usage = [
        [['pod'], /which subcommand\? add, ls, rm or setup/],
        [['pod', 'frob'], /unknown subcommand 'frob'; use add, ls, rm or setup/],
        [['pod', 'add', 'gpu1'], /'pod add' needs the ssh command line, as --ssh/],
        [['pod', 'add', '--ssh', 'ssh h'], /name one pod, as 'yard pod add gpu1'/],
        [['pod', 'ls', 'x'], /'pod ls' takes no arguments/],
        [['pod', 'ls', '--ssh', 'ssh h'], /--ssh and --models-path go with 'yard pod add'/],
        [['pod', 'add', 'a', '--ssh', 'ssh h', '--force'], /--force goes with 'yard pod rm'/],
        [['pod', 'setup'], /name one pod, as 'yard pod setup gpu1'/],
        [['pod', 'rm', 'a', '--timeout', '1m'], /--timeout goes with 'yard pod setup'/],
        [['pod', 'setup', 'a', '--timeout', '0'], /'--timeout 0' is not a duration/],
    ];
    for (const [args, re] of usage) {
        r = await h.yard(args, { stateDir: dir });
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, re);
        assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    }
    for (const args of [
        ['pod', 'ls'],
        ['pod', 'add', 'gpu1', '--ssh', 'ssh h'],
        ['pod', 'rm', 'gpu1'],
        ['pod', 'setup', 'gpu1'],
    ]) {
        r = await h.yard(args, { stateDir: dir });
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /^yard: no daemon running at .*\n$/);
    }
});
