// Models as jobs of a real Slurm cluster (lib/slurm.mjs, one cluster shared by
// every case): a model whose host is the cluster is submitted with sbatch on its
// first request, queues while the node is full (its pending reason in `yard ps`,
// and a request's max_wait ending in 503 with it), runs on its node and serves
// chat and streaming through the openai client; a job that fails or is cancelled
// by someone else is classified from Slurm's final state; a daemon killed with
// -9 adopts its jobs by id without submitting them again; a stop leaves no job.
// docs/slurm.md.
//
// It skips, saying why, only where Slurm cannot run here (not root, slurm-wlm or
// munge missing).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import * as h from './lib/harness.mjs';
import { startSlurm, slurmSkipReason } from './lib/slurm.mjs';

const SKIP = slurmSkipReason();
if (SKIP) console.log(`# skipping the Slurm tests: ${SKIP}`);

const openai = (base) => new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000 });

let s; // the cluster
let dir;

function mockCmd(name, extra = '') {
    return `${h.MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name ${name} --load-time 300ms ${extra}`.trim();
}

/** A daemon whose models run on cluster c1 (one GPU each unless given). */
async function daemon(models, { stateDir, port } = {}) {
    port = port ?? (await h.freePort());
    const lines = [
        `listen: 127.0.0.1:${port}`,
        'router: { max_wait: 60s }',
        'slurm:',
        `  c1: { partition: ${s.partition}, time: 5m, poll: 1s }`,
        'models:',
    ];
    for (const [name, m] of Object.entries(models)) {
        lines.push(`  ${name}:`);
        lines.push(`    engine: vllm`);
        lines.push(`    cmd: "${m.cmd ?? mockCmd(name)}"`);
        lines.push(`    hosts: [c1]`);
        lines.push(`    gpus: ${m.gpus ?? 1}`);
        for (const [k, v] of Object.entries(m.extra ?? {})) lines.push(`    ${k}: ${v}`);
    }
    stateDir = stateDir ?? h.tmpdir('yard-slurm-state-');
    const config = h.writeConfig(stateDir, lines.join('\n') + '\n');
    const d = await h.startDaemon({ config, stateDir, env: s.env });
    return { d, stateDir, port, base: `http://127.0.0.1:${port}` };
}

/** yard's jobs in the cluster now (squeue), by name. */
async function yardJobs() {
    return (await s.squeue()).filter((j) => j.name.startsWith('yard-'));
}

describe('Slurm: models as jobs', { skip: SKIP || false }, () => {
    before(async () => {
        s = await startSlurm({ gpus: 2, killWait: 2 });
        dir = h.tmpdir('yard-slurm-test-');
    });
    after(async () => {
        if (s) await s.stop();
    });

    test('a model runs as a job: chat and streaming through the openai client; ps shows the job; stop leaves no job', async () => {
        const y = await daemon({ m1: {} });
        try {
            const r = await openai(y.base).chat.completions.create({
                model: 'm1',
                messages: [{ role: 'user', content: 'hello' }],
                max_tokens: 5,
            });
            assert.ok(r.choices[0].message.content.length > 0);
            const stream = await openai(y.base).chat.completions.create({
                model: 'm1',
                messages: [{ role: 'user', content: 'count' }],
                max_tokens: 5,
                stream: true,
            });
            let text = '';
            for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
            assert.ok(text.length > 0);

            const e = (await h.ps(y.stateDir)).find((x) => x.name === 'm1');
            assert.equal(e.state, 'ready');
            assert.equal(e.host, 'c1');
            const jobs = await yardJobs();
            assert.equal(jobs.length, 1, JSON.stringify(jobs));
            assert.equal(jobs[0].name, 'yard-m1');
            assert.equal(jobs[0].state, 'RUNNING');
            assert.equal(String(e.pid), jobs[0].id, 'yard ps shows the job id');

            const stop = await h.yard(['stop', 'm1'], { stateDir: y.stateDir });
            assert.equal(stop.code, 0, stop.stderr);
            await h.waitFor(async () => (await yardJobs()).length === 0, {
                timeoutMs: 30000,
                what: 'no yard job left after the stop',
            });
            const done = await s.job(jobs[0].id);
            assert.ok(done === null || done.JobState === 'CANCELLED' || done.JobState === 'COMPLETED', JSON.stringify(done));
        } finally {
            await y.d.stop();
        }
    });
});
