// Machines that fail their start, through a rent against the Vast stand-in
// (lib/vast-standin.mjs), with the cloud's deadlines made short in the config
// (docs/cloud.md, "Deadlines"):
//
//   - an instance stuck in `loading` past deadlines.running, one whose
//     status_msg carries an OCI runtime error, and one whose ssh never answers
//     within deadlines.ssh: each destroyed, its machine in the bad-host
//     registry, and the next offer rented; the one that serves is a machine in
//     a network namespace of its own (its own address), where namespaces can
//     be made (root), else on loopback
//   - a setup still running at deadlines.setup: the same
//   - an engine that loads slowly on a rented machine: its diagnostics (the
//     engine's last log lines, nvidia-smi, ps) in the model's events past half
//     of deadlines.ready; past it, the machine destroyed and recorded bad, and
//     the model served on the next offer's machine
//
// Each step is awaited by the rent's answer and the events, never by a sleep.

import { describe, test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { assert, tmpdir, freePort, startProcess, waitFor, yard, yardJson, MOCK_ENGINE_BIN, YARD_BIN } from './lib/harness.mjs';
import { startVastStandin, netnsSkipReason } from './lib/vast-standin.mjs';
import { standinDaemon, creates, alive } from './lib/cloud.mjs';
import { sshdSkipReason } from './lib/sshd.mjs';

const skip = sshdSkipReason();
const netns = !skip && !netnsSkipReason();

const daemon = (s, { cloud = '', models = '', port = null } = {}) => standinDaemon(s, { disk: null, cloud, models, port });

describe('machines that fail their start', { skip: skip ?? false }, () => {
    test(`stuck loading, an OCI error, ssh dead: each destroyed and recorded bad; the next offer serves (${netns ? 'network namespaces' : 'loopback'})`, async () => {
        const offers = [201, 202, 203, 204].map((id, i) => ({
            id,
            machine_id: 2001 + i,
            dph_total: 0.3 + i / 10,
            gpu_name: 'RTX 4090',
            gpu_ram: 24564,
        }));
        const s = await startVastStandin({ offers, netns });
        await s.script(
            { kind: 'stuck_loading', offer: 201 },
            { kind: 'oci_error', offer: 202 },
            { kind: 'ssh_dead', offer: 203 },
        );
        const { dir, d } = await daemon(s, { cloud: '    deadlines: { running: 4s, ssh: 3s }\n' });
        try {
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            assert.deepEqual(
                creates(s).map((x) => x.path),
                ['/api/v0/asks/201/', '/api/v0/asks/202/', '/api/v0/asks/203/', '/api/v0/asks/204/'],
            );
            const live = alive(s);
            assert.deepEqual(
                live.map((i) => i.offer.id),
                [204],
                'the three that failed were destroyed',
            );

            const bad = await yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
            const why = Object.fromEntries(bad.map((b) => [b.machine_id, b.reason]));
            assert.deepEqual(Object.keys(why).map(Number).sort(), [2001, 2002, 2003]);
            assert.match(why[2001], /^instance \d+ did not run within 4s of its create \(deadlines\.running; status loading\)$/);
            assert.match(why[2002], /^instance \d+ cannot run: status created: .*OCI runtime create failed/);
            assert.match(why[2003], /^ssh did not answer within 3s of the instance running \(deadlines\.ssh\): /);
            assert.ok(bad.every((b) => b.by_hand === false && b.cloud === 'vast'));

            const ev = await yard(['events', '-n', '200'], { stateDir: dir });
            for (const offer of [201, 202, 203]) {
                const inst = [...s.state.instances.values()].find((i) => i.offer.id === offer);
                assert.ok(inst.destroyed, `offer ${offer}'s instance destroyed`);
                assert.match(ev.stdout, new RegExp(`destroyed instance ${inst.id}: `), ev.stdout);
            }
            assert.match(ev.stdout, / ready$/m);

            // the machine that serves: reached at its own address
            const rows = await yardJson(['cloud', 'ls', '--json'], { stateDir: dir });
            assert.equal(rows.length, 1);
            assert.equal(rows[0].offer, 204);
            assert.equal(rows[0].state, 'ready');
            const hosts = await yardJson(['hosts', '--json'], { stateDir: dir });
            const h = hosts.find((x) => x.name === rows[0].name);
            assert.equal(h?.kind, 'rented');
            assert.equal(h.reachable, true);
            if (netns) {
                const m = s.machine(live[0].id);
                assert.match(m.publicAddr, /^10\.\d+\.\d+\.\d+$/);
                assert.ok(ev.stdout.includes(`running at ${m.publicAddr}:`), ev.stdout);
            }

            const rel = await yard(['cloud', 'release', rows[0].name], { stateDir: dir });
            assert.equal(rel.code, 0, rel.stderr);
            assert.equal(alive(s).length, 0);
        } finally {
            await d.stop();
            await s.stop();
        }
    });

    test('a setup still running at deadlines.setup: destroyed, recorded bad, the next offer serves', async () => {
        const offers = [201, 202].map((id, i) => ({ id, machine_id: 2001 + i, dph_total: 0.3 + i / 10, gpu_name: 'RTX 4090', gpu_ram: 24564 }));
        // the first machine's setup never ends (its download crawls): its HOME says so before it runs
        let s = null;
        s = await startVastStandin({
            offers,
            onCreate: (id) => {
                if (s.state.instances.get(id).offer.id === 201) fs.writeFileSync(path.join(s.machine(id).home, 'crawl'), '');
            },
        });
        const { dir, d } = await daemon(s, {
            cloud: '    setup: "if [ -e ~/crawl ]; then sleep 600; fi; echo done > ~/setup-ran"\n    deadlines: { setup: 2s }\n',
        });
        try {
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            assert.deepEqual(
                creates(s).map((x) => x.path),
                ['/api/v0/asks/201/', '/api/v0/asks/202/'],
            );
            const live = alive(s);
            assert.deepEqual(
                live.map((i) => i.offer.id),
                [202],
            );
            assert.equal(fs.readFileSync(path.join(s.machine(live[0].id).home, 'setup-ran'), 'utf8'), 'done\n');
            const bad = await yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
            assert.deepEqual(
                bad.map((b) => [b.machine_id, b.reason]),
                [[2001, "the cloud's setup did not finish within 2s (deadlines.setup)"]],
            );
            const rel = await yard(['cloud', 'release', (await yardJson(['cloud', 'ls', '--json'], { stateDir: dir }))[0].name], { stateDir: dir });
            assert.equal(rel.code, 0, rel.stderr);
        } finally {
            await d.stop();
            await s.stop();
        }
    });
});

describe('a slow warm-up on a rented machine', { skip: skip ?? false }, () => {
    test('diagnostics in the events; past deadlines.ready the machine is destroyed, recorded bad, and the next one serves', async () => {
        const offers = [201, 202].map((id, i) => ({ id, machine_id: 2001 + i, dph_total: 0.3 + i / 10, gpu_name: 'RTX 4090', gpu_ram: 24564 }));
        // the first machine loads the engine for ten minutes: its HOME says so before it runs
        let s = null;
        s = await startVastStandin({
            offers,
            onCreate: (id) => {
                const inst = s.state.instances.get(id);
                if (inst.offer.id === 201) fs.writeFileSync(path.join(s.machine(id).home, 'load-time'), '600s\n');
            },
        });
        const port = await freePort();
        // the machines are processes of this host: the engine's wrapper is a file here
        const engine = path.join(tmpdir(), 'engine.sh');
        // (the slow one first logs a line of bytes that are no text: an escape, a control byte, no UTF-8)
        fs.writeFileSync(
            engine,
            '#!/bin/sh\n' +
                `[ -e "$HOME/load-time" ] && printf 'weights: \\033[1mslow\\001 \\377\\n'\n` +
                `exec ${MOCK_ENGINE_BIN} "$@" --load-time "$(cat "$HOME/load-time" 2>/dev/null || echo 0s)"\n`,
            { mode: 0o755 },
        );
        const models =
            'models:\n' +
            '  c:\n    engine: vllm\n    hosts: [vast]\n' +
            `    cmd: "${engine} --flavor vllm --port \${PORT} --name \${NAME}"\n`;
        const { dir, d } = await daemon(s, { models, port, cloud: '    deadlines: { ready: 8s }\n' });
        const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0, timeout: 90000 });
        const ask = () => client.chat.completions.create({ model: 'c', messages: [{ role: 'user', content: 'hi' }] });
        // a follower of the model's events hears the diagnostics while the slow machine still runs
        const follow = startProcess(YARD_BIN, ['--state-dir', dir, 'events', 'c', '-f', '--json'], { name: 'yard events -f' });
        let heardWhileAlive = null;
        const watching = waitFor(
            () => {
                if (!/slow warm-up: loading for/.test(follow.logText())) return false;
                const slow = [...s.state.instances.values()].find((i) => i.offer.id === 201);
                heardWhileAlive = !slow.destroyed;
                return true;
            },
            { what: 'the diagnostics in yard events -f', timeoutMs: 60000, intervalMs: 10 },
        );
        try {
            // the request that rented the slow machine may fail with its engine; the next is served
            let answer = await ask().catch((e) => e);
            if (answer instanceof Error) {
                await waitFor(async () => (await yardJson(['cloud', 'bad', '--json'], { stateDir: dir })).length === 1, {
                    what: 'the slow machine recorded bad',
                    timeoutMs: 30000,
                });
                answer = await ask();
            }
            assert.ok(answer.choices[0].message.content.length > 0);
            assert.deepEqual(
                alive(s).map((i) => i.offer.id),
                [202],
                'the slow machine was destroyed',
            );
            const bad = await yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
            assert.equal(bad.length, 1);
            assert.equal(bad[0].machine_id, 2001);
            assert.equal(bad[0].reason, "the engine of 'c' did not become ready within 8s of its start (deadlines.ready)");

            const ev = await yard(['events', 'c', '-n', '300', '--json'], { stateDir: dir });
            assert.equal(ev.code, 0, ev.stderr);
            const events = ev.stdout.trim().split('\n').map((l) => JSON.parse(l));
            const diag = events.filter((e) => /^slow warm-up: /.test(e.reason));
            assert.ok(diag.length >= 1, ev.stdout);
            // all from the slow machine, the first one rented
            assert.deepEqual([...new Set(diag.map((e) => e.host))], ['vast-1'], ev.stdout);
            const first = diag[0].reason;
            assert.match(first, /^slow warm-up: loading for \d+s of 8s \(deadlines\.ready\)/);
            assert.match(first, /; log: .*Loading safetensors checkpoint shards/);
            // the machine's bytes made printable: no control byte, invalid UTF-8 replaced
            assert.ok(first.includes('weights: ?[1mslow? \ufffd'), first);
            assert.ok(!/[\u0000-\u001f\u007f]/.test(first), first);
            assert.match(first, /; nvidia-smi: 0, GPU-0+-0000-0000-0000-000000000000, NVIDIA RTX 4090, 24564/);
            assert.match(first, /; ps: +PID +ELAPSED /);
            assert.ok(Buffer.byteLength(first) <= 4096, `bounded: ${Buffer.byteLength(first)} bytes`);
            const destroyed = events.findIndex((e) => /^destroyed instance \d+: the engine of 'c' did not become ready within 8s/.test(e.reason));
            assert.ok(destroyed >= 0, ev.stdout);
            assert.ok(events.indexOf(diag[0]) < destroyed, 'the diagnostics come before the destroy');
            await watching;
            assert.equal(heardWhileAlive, true, 'yard events -f had the diagnostics before the machine went');
        } finally {
            await follow.stop();
            await d.stop();
            await s.stop();
        }
    });
});
