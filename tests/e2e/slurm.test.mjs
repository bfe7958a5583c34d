// Models as jobs of a real Slurm cluster (lib/slurm.mjs, one cluster shared by
// every case): a model whose host is the cluster is submitted with sbatch on its
// first request, queues while the node is full (its pending reason in `yard ps`,
// and a request's max_wait ending in 503 with it), runs on its node and serves
// chat and streaming through the openai client; a job that fails or is cancelled
// by someone else is classified from Slurm's final state; a daemon killed with
// -9 adopts its jobs by id without submitting them again; a stop leaves no job;
// a job is found running by its address file between two polls (a cluster
// polled every 10 minutes serves at once). docs/slurm.md.
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
import { startSshd, sshdSkipReason } from './lib/sshd.mjs';

const SKIP = slurmSkipReason();
if (SKIP) console.log(`# skipping the Slurm tests: ${SKIP}`);

const openai = (base) => new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000 });

let s; // the cluster
let dir;

function mockCmd(name, extra = '') {
    return `${h.MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name ${name} --load-time 300ms ${extra}`.trim();
}

/** A daemon whose models run on cluster c1 (one GPU each unless given). */
async function daemon(models, { stateDir, port, maxWait = '60s', cluster = 'time: 5m' } = {}) {
    port = port ?? (await h.freePort());
    const lines = [
        `listen: 127.0.0.1:${port}`,
        `router: { max_wait: ${maxWait} }`,
        'slurm:',
        `  c1: { partition: ${s.partition}, ${cluster}${cluster.includes('poll:') ? '' : ', poll: 1s'} }`,
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
    return { d, stateDir, port, config, base: `http://127.0.0.1:${port}` };
}

const chatBody = (model, stream = false) => ({
    model,
    messages: [{ role: 'user', content: 'hi' }],
    max_tokens: 3,
    stream,
});

/** A job that holds n GPUs of the node until cancelled. */
async function blocker(n) {
    const id = await s.sbatch([`--gres=gpu:${n}`, '--time=5', '--job-name=blocker'], '#!/bin/sh\nexec sleep 600\n');
    await s.waitJob(id, 'RUNNING');
    return id;
}

async function entry(stateDir, name) {
    return (await h.ps(stateDir)).find((x) => x.name === name);
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
            assert.equal(String(e.job), jobs[0].id);
            assert.equal(e.node, s.nodeName);
            const table = await h.yard(['ps'], { stateDir: y.stateDir });
            assert.match(table.stdout, new RegExp(`^m1\\s+vllm\\s+c1/${s.nodeName}\\s+0\\s+ready\\s+job ${jobs[0].id}\\s`, 'm'), table.stdout);
            // yard hosts: the cluster, its partition's GPUs and the job.
            // (sinfo is read as the daemon starts, beside the job's start: wait for its answer.)
            const hosts = await h.waitFor(
                async () => {
                    const r = await h.yard(['hosts'], { stateDir: y.stateDir });
                    assert.equal(r.code, 0, r.stderr);
                    return /^  partition /m.test(r.stdout) ? r : false;
                },
                { timeoutMs: 30000, what: "the cluster's partitions in yard hosts" }
            );
            assert.match(hosts.stdout, /^c1\s+slurm\s+yes\s/m, hosts.stdout);
            assert.match(hosts.stdout, new RegExp(`^  partition ${s.partition}\\*? \\(up\\): 1 node \\S+, GPUs gpu:2`, 'm'), hosts.stdout);
            assert.match(hosts.stdout, new RegExp(`^  job ${jobs[0].id} yard-m1: running on ${s.nodeName}, port \\d+$`, 'm'), hosts.stdout);
            // yard logs: the job's output is the model's log.
            const logs = await h.yard(['logs', 'm1'], { stateDir: y.stateDir });
            assert.match(logs.stdout, new RegExp(`yard: job ${jobs[0].id} runs on ${s.nodeName}, port \\d+`), logs.stdout);

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
    test('a job pends with its reason (ps, SSE, 503 at max_wait); kill -9 of the daemon with a running and a pending job: both adopted, none submitted twice; stop leaves no job', async () => {
        const b1 = await blocker(2);
        const models = { p1: {}, p2: {} };
        let y = await daemon(models, { maxWait: '3s' });
        let b2;
        try {
            // The node is full: p1's job pends with Slurm's reason, and a request gives up with it.
            const first = h.httpPost(`${y.base}/v1/chat/completions`, chatBody('p1'));
            const e = await h.waitFor(
                async () => {
                    const x = await entry(y.stateDir, 'p1');
                    return x?.state === 'starting' && /^job \d+ pending: Resources$/.test(x.reason) ? x : false;
                },
                { timeoutMs: 30000, what: "p1's job pending for Resources" }
            );
            const p1job = String(e.pid);
            assert.equal((await first).status, 503);
            const r = await h.httpPost(`${y.base}/v1/chat/completions`, chatBody('p1'));
            assert.equal(r.status, 503, r.body);
            assert.match(r.body, new RegExp(`router\\.max_wait\\): job ${p1job} pending: Resources`));
            // A streaming client hears it in the stream's loading comment.
            const st = await h.httpPost(`${y.base}/v1/chat/completions`, chatBody('p1', true));
            assert.equal(st.status, 200);
            assert.match(st.body, new RegExp(`^: loading p1: job ${p1job} pending: Resources$`, 'm'));

            // The node frees up: the job runs and the model serves.
            await s.scancel([b1]);
            await h.waitState(y.stateDir, 'p1', 'ready', 60000);
            const ok = await h.httpPost(`${y.base}/v1/chat/completions`, chatBody('p1'));
            assert.equal(ok.status, 200, ok.body);

            // p2 pends behind another job holding the last GPU.
            b2 = await blocker(1);
            h.httpPost(`${y.base}/v1/chat/completions`, chatBody('p2')).catch(() => {});
            await h.waitFor(async () => /pending/.test((await entry(y.stateDir, 'p2'))?.reason ?? ''), {
                timeoutMs: 30000,
                what: 'p2 pending',
            });
            const p2job = String((await entry(y.stateDir, 'p2')).pid);
            assert.match(p2job, /^\d+$/);

            // kill -9: the jobs stay; the next daemon adopts both by id.
            y.d.kill('SIGKILL');
            await y.d.waitExit();
            y = { ...y, d: await h.startDaemon({ config: y.config, stateDir: y.stateDir, env: s.env }) };
            const a1 = await h.waitState(y.stateDir, 'p1', 'ready', 30000);
            assert.equal(String(a1.pid), p1job);
            const a2 = await h.waitFor(
                async () => {
                    const x = await entry(y.stateDir, 'p2');
                    return x?.state === 'starting' && /pending/.test(x.reason) ? x : false;
                },
                { timeoutMs: 30000, what: 'p2 adopted, still pending' }
            );
            assert.equal(String(a2.pid), p2job);
            let jobs = await yardJobs();
            assert.deepEqual(jobs.map((j) => j.id).sort(), [p1job, p2job].sort(), JSON.stringify(jobs));

            await s.scancel([b2]);
            b2 = null;
            await h.waitState(y.stateDir, 'p2', 'ready', 60000);
            assert.equal(String((await entry(y.stateDir, 'p2')).pid), p2job);
            const ok2 = await h.httpPost(`${y.base}/v1/chat/completions`, chatBody('p2'));
            assert.equal(ok2.status, 200, ok2.body);
            jobs = await yardJobs();
            assert.equal(jobs.length, 2, `no job was submitted twice: ${JSON.stringify(jobs)}`);

            const stop = await h.yard(['stop', 'p1', 'p2'], { stateDir: y.stateDir });
            assert.equal(stop.code, 0, stop.stderr);
            await h.waitFor(async () => (await yardJobs()).length === 0, { timeoutMs: 30000, what: 'no yard job left' });
        } finally {
            if (b2) await s.scancel([b2]);
            await s.scancel([b1]);
            await y.d.stop();
        }
    });

    test('a job that fails: exit code and the engine\'s OOM line; a job cancelled by someone else: classified, restarted per policy', async () => {
        const y = await daemon({
            f1: { cmd: mockCmd('f1', '--fail oom') },
            c1: { extra: { restart: 'on-failure' } },
        });
        try {
            const r = await h.httpPost(`${y.base}/v1/chat/completions`, chatBody('f1'));
            assert.ok(r.status >= 500, `${r.status} ${r.body}`);
            const f = await h.waitState(y.stateDir, 'f1', 'failed', 30000);
            assert.match(f.reason, /job \d+ failed \(FAILED, exit code \d+\) during load: .*out of memory/i);

            const ok = await h.httpPost(`${y.base}/v1/chat/completions`, chatBody('c1'));
            assert.equal(ok.status, 200, ok.body);
            const first = String((await entry(y.stateDir, 'c1')).pid);
            await s.scancel([first]);
            // Classified, then restarted as a new job that serves.
            await h.waitFor(
                async () => {
                    const ev = await h.yard(['events', 'c1', '-n', '50'], { stateDir: y.stateDir });
                    return new RegExp(`job ${first} was cancelled outside yard \\(CANCELLED`).test(ev.stdout);
                },
                { timeoutMs: 30000, what: 'the cancel classified in yard events' }
            );
            const back = await h.waitFor(
                async () => {
                    const x = await entry(y.stateDir, 'c1');
                    return x?.state === 'ready' && String(x.pid) !== first ? x : false;
                },
                { timeoutMs: 60000, what: 'c1 restarted as a new job' }
            );
            const ev = await h.yard(['events', 'c1', '-n', '50'], { stateDir: y.stateDir });
            assert.match(ev.stdout, /restart/i, ev.stdout);
            const again = await h.httpPost(`${y.base}/v1/chat/completions`, chatBody('c1'));
            assert.equal(again.status, 200, again.body);
            const stop = await h.yard(['stop', 'c1'], { stateDir: y.stateDir });
            assert.equal(stop.code, 0, stop.stderr);
            await h.waitFor(async () => (await yardJobs()).length === 0, { timeoutMs: 30000, what: 'no yard job left' });
        } finally {
            await y.d.stop();
        }
    });
    test('through a login node over ssh: submitted, watched and reached through its ssh master; adopted after kill -9; stop leaves no job', { skip: sshdSkipReason() || false }, async () => {
        // The "login node" is an sshd on this machine whose sessions find the cluster
        // (SLURM_CONF) and keep their files under their own HOME.
        const home = h.tmpdir('yard-slurm-login-home-');
        const sshd = await startSshd({ keyEnv: { SLURM_CONF: s.conf, HOME: home, PATH: process.env.PATH } });
        let y = await daemon({ l1: {} }, { cluster: `time: 5m, login: "${sshd.sshCmd}"` });
        try {
            const r = await openai(y.base).chat.completions.create(chatBody('l1'));
            assert.ok(r.choices[0].message.content.length > 0);
            const stream = await openai(y.base).chat.completions.create(chatBody('l1', true));
            let text = '';
            for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
            assert.ok(text.length > 0);
            const e = await entry(y.stateDir, 'l1');
            assert.equal(e.state, 'ready');
            assert.equal(e.node, s.nodeName);
            const jobs = await yardJobs();
            assert.deepEqual(jobs.map((j) => j.id), [String(e.job)]);
            // Its files are on the login node, under the session's HOME.
            const rdir = path.join(home, '.yard', 'slurm', 'c1');
            assert.ok(fs.existsSync(path.join(rdir, `${e.job}.addr`)), `no address file in ${rdir}`);
            assert.match(fs.readFileSync(path.join(rdir, `${e.job}.log`), 'utf8'), new RegExp(`yard: job ${e.job} runs on`));
            // Reached through a local forward, not at the node's port.
            const port = Number(fs.readFileSync(path.join(rdir, `${e.job}.addr`), 'utf8').trim().split(' ')[1]);
            assert.notEqual(e.port, port, 'the engine is reached through the forward');

            // kill -9: the next daemon adopts the job over ssh and forwards to it again.
            y.d.kill('SIGKILL');
            await y.d.waitExit();
            y = { ...y, d: await h.startDaemon({ config: y.config, stateDir: y.stateDir, env: s.env }) };
            const a = await h.waitState(y.stateDir, 'l1', 'ready', 30000);
            assert.equal(a.job, e.job);
            const again = await openai(y.base).chat.completions.create(chatBody('l1'));
            assert.ok(again.choices[0].message.content.length > 0);
            assert.equal((await yardJobs()).length, 1, 'not submitted again');

            const stop = await h.yard(['stop', 'l1'], { stateDir: y.stateDir });
            assert.equal(stop.code, 0, stop.stderr);
            await h.waitFor(async () => (await yardJobs()).length === 0, { timeoutMs: 30000, what: 'no yard job left' });
        } finally {
            await y.d.stop();
            await sshd.proc.stop();
        }
    });

    test('a job is found running by its address file between the polls: a cluster polled every 10 minutes serves its first request', async () => {
        // The squeue half a second after the submission sees the job pending (the
        // scheduler has not run it yet); the next is 10 minutes away.
        const y = await daemon({ f1: { gpus: 0 } }, { cluster: 'time: 5m, poll: 10m', maxWait: '60s' });
        try {
            const r = await openai(y.base).chat.completions.create(chatBody('f1'));
            assert.ok(r.choices[0].message.content.length > 0);
            const e = await entry(y.stateDir, 'f1');
            assert.equal(e.state, 'ready');
            const stop = await h.yard(['stop', 'f1'], { stateDir: y.stateDir });
            assert.equal(stop.code, 0, stop.stderr);
            await h.waitFor(async () => (await yardJobs()).length === 0, { timeoutMs: 30000, what: 'no yard job left' });
        } finally {
            await y.d.stop();
        }
    });

    test('walltime renewal: a replacement job takes over ahead of the limit while requests stream across it, none failing; the old job is cancelled', async () => {
        // A 1-minute limit, renewed 40s before it: the first job is replaced about 20s in.
        const y = await daemon({ w1: { gpus: 0 } }, { cluster: 'time: 1m, renew_before: 40s' });
        try {
            const first = await openai(y.base).chat.completions.create(chatBody('w1'));
            assert.ok(first.choices[0].message.content.length > 0);
            const job1 = String((await entry(y.stateDir, 'w1')).pid);
            let served = 0;
            let job2 = null;
            let switchedAt = 0;
            // Streams back to back (two at a time) until the replacement has served for a while.
            const worker = async () => {
                while (!switchedAt || Date.now() - switchedAt < 5000) {
                    const stream = await openai(y.base).chat.completions.create(chatBody('w1', true));
                    let text = '';
                    for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
                    assert.ok(text.length > 0, 'a stream with no text');
                    served++;
                }
            };
            const watcher = h.waitFor(
                async () => {
                    const x = await entry(y.stateDir, 'w1');
                    if (x?.state === 'ready' && String(x.pid) !== job1) {
                        job2 = String(x.pid);
                        switchedAt = Date.now();
                        return true;
                    }
                    return false;
                },
                { timeoutMs: 90000, intervalMs: 200, what: 'w1 moved to a replacement job' }
            );
            await Promise.all([worker(), worker(), watcher]);
            assert.ok(served > 10, `only ${served} streams`);
            assert.notEqual(job2, job1);
            const ev = await h.yard(['events', 'w1', '-n', '50'], { stateDir: y.stateDir });
            assert.match(ev.stdout, new RegExp(`job ${job2} replaced job ${job1} ahead of its time limit`), ev.stdout);
            // The replaced job drains, then is cancelled before its limit.
            const old = await h.waitFor(
                async () => {
                    const j = await s.job(job1);
                    return j === null || ['CANCELLED', 'COMPLETED', 'TIMEOUT'].includes(j.JobState) ? j ?? {} : false;
                },
                { timeoutMs: 60000, what: `job ${job1} gone` }
            );
            assert.notEqual(old.JobState, 'TIMEOUT', 'the replaced job was cancelled, not left to its limit');
            const stop = await h.yard(['stop', 'w1'], { stateDir: y.stateDir });
            assert.equal(stop.code, 0, stop.stderr);
            await h.waitFor(async () => (await yardJobs()).length === 0, { timeoutMs: 30000, what: 'no yard job left' });
        } finally {
            await y.d.stop();
        }
    });
});
