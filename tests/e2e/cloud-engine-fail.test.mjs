// An engine that fails on a rented machine (docs/cloud.md, "An engine that fails
// there"), against the Vast stand-in (lib/vast-standin.mjs) whose machines are real
// sshd processes, with mock engines started over ssh by the pod runner:
//
//   - the machine's fault: the first offer's machine makes every engine print a CUDA
//     driver error (MOCK_ENGINE_FAIL=cuda-driver in its sessions' environment). The
//     machine is destroyed and recorded in `yard cloud bad` with the line, the next
//     offer is rented, and the request that waited is answered there (openai client).
//   - the model's fault: the engine runs out of GPU memory while loading. The machine
//     is destroyed without blame (not in `yard cloud bad`), the request is answered
//     with a 503 naming the reason, and the next request is refused with it too
//     instead of renting again at once.
//   - machines that all fail their engines count against max_tries: two machines
//     rented of three offers with max_tries 2, then the model's rent is held failed.

import { describe, test } from 'node:test';
import OpenAI from 'openai';
import { assert, waitFor, yard, yardJson, MOCK_ENGINE_BIN } from './lib/harness.mjs';
import { startVastStandin } from './lib/vast-standin.mjs';
import { standinDaemon, creates, alive } from './lib/cloud.mjs';
import { sshdSkipReason } from './lib/sshd.mjs';

const skip = sshdSkipReason();

async function daemon(s, fail, cloud = '') {
    const models =
        'models:\n' +
        '  c:\n    engine: vllm\n    hosts: [vast]\n' +
        `    cmd: "${MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s${fail}"\n`;
    const { dir, d, port } = await standinDaemon(s, { cloud, models });
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0, timeout: 90000 });
    return { dir, d, client };
}

// The error a request fails with, or null when it is answered.
const refusal = (p) => p.then(() => null, (e) => e);
const ask = (client, content) => client.chat.completions.create({ model: 'c', messages: [{ role: 'user', content }] });

describe('an engine that fails on a rented machine', { skip: skip ?? false }, () => {
    test("the machine's fault (a CUDA driver error): destroyed, in the bad-host registry, the next offer serves", async () => {
        const s = await startVastStandin({
            offers: [
                { id: 201, machine_id: 2001, dph_total: 0.3, gpu_name: 'RTX 4090', gpu_ram: 24564, machine_env: { MOCK_ENGINE_FAIL: 'cuda-driver' } },
                { id: 202, machine_id: 2002, dph_total: 0.4, gpu_name: 'RTX 4090', gpu_ram: 24564 },
            ],
        });
        const { dir, d, client } = await daemon(s, '');
        try {
            const chat = await ask(client, 'one');
            assert.ok(chat.choices[0].message.content.length > 0);
            const live = alive(s);
            assert.equal(live.length, 1);
            assert.equal(live[0].offer.id, 202);
            const first = [...s.state.instances.values()].find((i) => i.offer.id === 201);
            assert.ok(first && first.destroyed, 'the first machine is destroyed');
            const bad = await yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
            assert.deepEqual(bad.map((b) => b.machine_id), [2001]);
            assert.match(bad[0].reason, /by the machine's fault: .*CUDA driver version is insufficient for CUDA runtime version/);
            const ev = await yard(['events', 'c', '-n', '200'], { stateDir: dir });
            assert.match(ev.stdout, new RegExp(`destroyed instance ${first.id}: the engine of 'c' failed there by the machine's fault`));
            // the engine started once on the machine that failed it: never again while it was destroyed
            const starts = ev.stdout.split('\n').filter((l) => /-> starting: connecting to pod 'vast-1'|-> starting connecting to pod 'vast-1'/.test(l));
            assert.equal(starts.length, 1, ev.stdout);
            const ps = await yardJson(['ps', '--json'], { stateDir: dir });
            assert.equal(ps.find((x) => x.name === 'c').state, 'ready');
        } finally {
            await d.stop();
            await s.stop();
        }
    });

    test('machines whose engines fail by their fault count against max_tries', async () => {
        const env = { MOCK_ENGINE_FAIL: 'cuda-driver' };
        const s = await startVastStandin({
            offers: [
                { id: 401, machine_id: 4001, dph_total: 0.3, gpu_name: 'RTX 4090', gpu_ram: 24564, machine_env: env },
                { id: 402, machine_id: 4002, dph_total: 0.4, gpu_name: 'RTX 4090', gpu_ram: 24564, machine_env: env },
                { id: 403, machine_id: 4003, dph_total: 0.5, gpu_name: 'RTX 4090', gpu_ram: 24564, machine_env: env },
            ],
        });
        const { dir, d, client } = await daemon(s, '', '    max_tries: 2\n');
        try {
            const err = await refusal(ask(client, 'one'));
            assert.ok(err, 'the request fails');
            assert.equal(err.status, 503);
            assert.match(err.message, /CUDA driver version is insufficient/);
            await waitFor(() => alive(s).length === 0, { what: 'both machines destroyed', timeoutMs: 30000 });
            assert.deepEqual(creates(s).map((r) => r.path), ['/api/v0/asks/401/', '/api/v0/asks/402/']);
            const bad = await yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
            assert.deepEqual(bad.map((b) => b.machine_id).sort(), [4001, 4002]);
            const again = await refusal(ask(client, 'two'));
            assert.ok(again, 'the second request fails');
            assert.match(again.message, /cloud 'vast' could not rent a machine for it: its engine failed on 2 machines by their fault \(max_tries 2\); the last, machine 4002: /);
            assert.equal(creates(s).length, 2);
        } finally {
            await d.stop();
            await s.stop();
        }
    });

    test("the model's fault (out of memory): destroyed without blame, the request answered with the reason, no rent again at once", async () => {
        const s = await startVastStandin({
            offers: [
                { id: 301, machine_id: 3001, dph_total: 0.3, gpu_name: 'RTX 4090', gpu_ram: 24564 },
                { id: 302, machine_id: 3002, dph_total: 0.4, gpu_name: 'RTX 4090', gpu_ram: 24564 },
            ],
        });
        const { dir, d, client } = await daemon(s, ' --fail oom');
        try {
            const err = await refusal(ask(client, 'one'));
            assert.ok(err, 'the request fails');
            assert.equal(err.status, 503);
            assert.match(err.message, /model 'c' failed to start: .*CUDA out of memory/);
            await waitFor(() => alive(s).length === 0, { what: 'the machine destroyed', timeoutMs: 30000 });
            assert.equal(creates(s).length, 1);
            const bad = await yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
            assert.deepEqual(bad, []);
            // held: the next request hears why, and nothing is rented for it
            const again = await refusal(ask(client, 'two'));
            assert.ok(again, 'the second request fails');
            assert.equal(again.status, 503);
            assert.match(again.message, /cloud 'vast' destroyed the machine rented for it \(vast-\d+\): its engine failed there by the model's own fault: .*CUDA out of memory/);
            assert.equal(creates(s).length, 1);
            const ev = await yard(['events', 'c', '-n', '200'], { stateDir: dir });
            assert.match(ev.stdout, /the engine of 'c' failed there by the model's own fault \(the machine is not to blame\)/);
        } finally {
            await d.stop();
            await s.stop();
        }
    });
});
