// Models on a pod: started, watched and routed over a real OpenSSH server
// (docs/pods.md, "Running models on a pod").
//
// The file starts its own sshd on 127.0.0.1 (lib/sshd.mjs); the pod's sessions
// get HOME in a temp dir (its ~/.yard/logs) and a stand-in nvidia-smi with two
// declared GPUs. The engines are mock engines started on the pod by yard. Checks:
//   - a chat through the SSH forward with the official openai client; `yard ps`
//     shows the pod as host, the engine's pid and port; the log is on the pod
//     and mirrored for `yard logs` (and -f)
//   - a port already taken on the pod is skipped (auto) or named (fixed)
//   - hostile values in cmd and env reach the engine literally
//   - sshd killed mid-run: the model is `unknown`, requests get 503 with
//     Retry-After; sshd back: the same process is adopted again and serves
//   - kill -9 of the daemon: the next daemon re-adopts the remote instance
//   - `yard stop` ends the remote process group; --pod moves a local model
// It skips, saying why, when it does not run as root or sshd or ssh is missing.

import { test } from 'node:test';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import OpenAI from 'openai';
import * as h from './lib/harness.mjs';
import { sshdSkipReason, startSshd } from './lib/sshd.mjs';

const { assert } = h;
const FIXTURES = path.join(h.YARD_SRC_DIR, 'tests/e2e/fixtures');
const GPUS = '0,NVIDIA H100 80GB HBM3,81559;1,NVIDIA H100 80GB HBM3,81559';

const SKIP = sshdSkipReason();
if (SKIP) console.log(`# skipping the pod-run e2e tests: ${SKIP}`);

/** The sshd listener's children (one per connection), so that killing "sshd" cuts them too. */
function sshdTree(pid) {
    const out = [];
    const walk = (p) => {
        for (const c of h.childrenOf(p)) {
            out.push(c);
            walk(c);
        }
    };
    walk(pid);
    return out;
}

/** Kills sshd and every connection it serves: the pod is gone for yard. */
function killSshd(sshd) {
    const kids = sshdTree(sshd.proc.pid).filter((p) => /sshd/.test(h.cmdlineOf(p)));
    try {
        process.kill(sshd.proc.pid, 'SIGKILL');
    } catch {}
    for (const k of kids) {
        try {
            process.kill(k, 'SIGKILL');
        } catch {}
    }
}

function listen(port) {
    return new Promise((resolve, reject) => {
        const srv = net.createServer(() => {});
        srv.once('error', reject);
        srv.listen(port, '127.0.0.1', () => resolve(srv));
    });
}

/* A connection to 127.0.0.1:port made from 127.0.0.1:localPort, open until destroyed. */
function holdLocalPort(port, localPort) {
    return new Promise((resolve, reject) => {
        const c = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.1', localPort });
        c.once('error', reject);
        c.once('connect', () => resolve(c));
    });
}

async function psOf(dir, name) {
    const rows = await h.yardJson(['ps', '--json'], { stateDir: dir });
    return rows.find((r) => r.name === name);
}

test('models on a pod over a real sshd', { skip: SKIP || false, timeout: 240000 }, async (t) => {
    const dir = h.tmpdir('yard-podrun-');
    const home = path.join(dir, 'pod-home');
    fs.mkdirSync(path.join(home, 'bin'), { recursive: true });
    fs.symlinkSync(h.MOCK_ENGINE_BIN, path.join(home, 'bin', 'engine')); // for "~/bin/engine"
    const pwned = path.join(dir, 'pwned');
    const sshd = await startSshd({
        keyEnv: {
            PATH: `${FIXTURES}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
            HOME: home,
            YARD_FAKE_GPUS: GPUS,
        },
    });
    // a second pod: another sshd, one smaller GPU
    const home2 = path.join(dir, 'pod2-home');
    fs.mkdirSync(home2);
    const sshd2 = await startSshd({
        keyEnv: {
            PATH: `${FIXTURES}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
            HOME: home2,
            YARD_FAKE_GPUS: '0,NVIDIA A100-SXM4-40GB,40960',
        },
    });
    const port = await h.freePort();
    const base = await h.freePortRange(41); // base .. base+40 are the test's own
    const mock = h.MOCK_ENGINE_BIN;
    const config = h.writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\n` +
            `start_port: ${base}\n` +
            `models:\n` +
            `  remote:\n    engine: vllm\n    pod: box\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME} --load-time 300ms"\n` +
            `  hostile:\n    engine: vllm\n    pod: box\n` +
            `    env: { YARD_TEST_NOTE: "$(touch ${pwned}); echo '\`touch ${pwned}\`'" }\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s ` +
            `--served-model-name 'x; touch ${pwned}'"\n` +
            `  fixed:\n    engine: vllm\n    pod: box\n    port: ${base + 40}\n    restart: never\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME}"\n` +
            `  oom:\n    engine: vllm\n    pod: box\n    restart: never\n` +
            `    cmd: "~/bin/engine --flavor vllm --port \${PORT} --name \${NAME} --fail oom"\n` +
            `  big:\n    engine: vllm\n    pod: box\n    vram: 60GiB\n    gpus: 1\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s"\n` +
            `  big2:\n    engine: vllm\n    pod: box\n    vram: 60GiB\n    gpus: 1\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s"\n` +
            `  huge:\n    engine: vllm\n    pod: box2\n    vram: 60GiB\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME}"\n` +
            `  other:\n    engine: vllm\n    pod: box2\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s"\n` +
            `  loc:\n    engine: vllm\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s"\n` +
            `  here:\n    engine: vllm\n` +
            `    cmd: "${mock} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s"\n`,
    );
    let d = await h.startDaemon({ config, stateDir: dir });
    const yard = (...args) => h.yard(args, { stateDir: dir });
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0 });
    let taken = null;
    let held = null;
    try {
        taken = await listen(base); // the pod's first port is someone else's
        // The next one is the local port of an outgoing connection: nothing listens on it, yet
        // an engine cannot bind it (EADDRINUSE), so it must be skipped too.
        held = await holdLocalPort(base, base + 1);
        const add = await yard('pod', 'add', 'box', '--ssh', sshd.sshCmd);
        assert.equal(add.code, 0, add.stderr);
        const add2 = await yard('pod', 'add', 'box2', '--ssh', sshd2.sshCmd);
        assert.equal(add2.code, 0, add2.stderr);

        let pid;
        await t.test('a chat through the forward starts the model on the pod', async () => {
            const r = await client.chat.completions.create({
                model: 'remote',
                messages: [{ role: 'user', content: 'hello pod' }],
            });
            assert.ok(r.choices[0].message.content.length > 0);
            const row = await psOf(dir, 'remote');
            assert.equal(row.host, 'box');
            assert.equal(row.state, 'ready');
            assert.ok(row.pid > 0);
            // the ports taken on the pod were skipped: one listening, one held by a connection
            assert.equal(row.port, base + 2);
            pid = row.pid;
            // the engine runs in its own session and group on the pod
            assert.equal(h.pgidOf(pid), pid);
            const remoteLog = path.join(home, '.yard/logs/remote.log');
            assert.match(fs.readFileSync(remoteLog, 'utf8'), /Application startup complete/);
        });

        await t.test('streaming through the forward', async () => {
            const stream = await client.chat.completions.create({
                model: 'remote',
                messages: [{ role: 'user', content: 'stream please' }],
                stream: true,
            });
            let text = '';
            for await (const c of stream) text += c.choices[0]?.delta?.content || '';
            assert.ok(text.length > 0);
        });

        await t.test('yard logs shows the remote log, -f follows it', async () => {
            // the mirror is filled by the pod's poll (every second)
            await h.waitFor(
                async () => /Application startup complete/.test((await yard('logs', 'remote', '-n', '200')).stdout),
                { timeoutMs: 10000, what: 'the startup line in yard logs' },
            );
            const follow = h.startProcess(h.YARD_BIN, ['logs', 'remote', '-f', '-n', '0'], {
                env: { YARD_STATE_DIR: dir },
                name: 'yard logs -f',
            });
            try {
                await client.chat.completions.create({
                    model: 'remote',
                    messages: [{ role: 'user', content: 'log me' }],
                });
                await h.waitFor(() => /POST \/v1\/chat\/completions/.test(follow.logText()), {
                    timeoutMs: 10000,
                    what: 'the access line through logs -f',
                });
            } finally {
                await follow.stop();
            }
        });

        await t.test('a fixed port taken on the pod is named', async () => {
            const srv = await listen(base + 40);
            try {
                const r = await yard('start', 'fixed', '--wait');
                assert.equal(r.code, 1, r.stdout);
                assert.match(r.stderr + r.stdout, /port \d+ is already in use on pod 'box'/);
            } finally {
                srv.close();
            }
        });

        await t.test('a load that dies on the pod: exit code and classified line', async () => {
            const r = await yard('start', 'oom', '--wait');
            assert.equal(r.code, 1, r.stdout);
            const row = await psOf(dir, 'oom');
            assert.equal(row.state, 'failed');
            assert.equal(row.host, 'box');
            assert.match(row.reason, /exited with code 1 during load: .*CUDA out of memory/);
        });

        await t.test("placement on the pod's GPUs, by memory", async () => {
            for (const m of ['big', 'big2']) {
                const r = await yard('start', m, '--wait');
                assert.equal(r.code, 0, r.stderr);
            }
            const gpus = [(await psOf(dir, 'big')).gpus, (await psOf(dir, 'big2')).gpus];
            assert.deepEqual(gpus.sort(), ['0', '1'], 'least loaded first: one GPU each');
            // yard gpus shows the pod's GPUs with yard's models on them
            const inv = await h.yardJson(['gpus', '--json'], { stateDir: dir });
            const box = inv.pods.find((p) => p.name === 'box');
            assert.equal(box.reachable, true);
            assert.equal(box.kind, 'pod');
            assert.equal(box.gpus.length, 2);
            const on = box.gpus.map((g) => g.processes.map((p) => p.model).sort().join());
            assert.deepEqual(on.sort(), ['big', 'big2']);
            assert.equal(inv.pods.find((p) => p.name === 'box2').gpus[0].name, 'NVIDIA A100-SXM4-40GB');
            const table = await yard('gpus');
            assert.equal(table.code, 0, table.stderr);
            assert.match(table.stdout, /pod 'box'\n/);
            assert.match(table.stdout, /NVIDIA H100 80GB HBM3[\s\S]*pid \d+ vllm \?\s+big/);
            const r = await h.httpPost(
                `http://127.0.0.1:${port}/v1/chat/completions`,
                JSON.stringify({ model: 'huge', messages: [{ role: 'user', content: 'hi' }] }),
                { headers: { 'content-type': 'application/json' } },
            );
            assert.equal(r.status, 503, r.body);
            assert.match(JSON.parse(r.body).error.message, /largest GPU has 40\.0GiB/);
            for (const m of ['big', 'big2']) assert.equal((await yard('stop', m)).code, 0);
        });

        await t.test('a second pod serves alongside', async () => {
            const c = await client.chat.completions.create({
                model: 'other',
                messages: [{ role: 'user', content: 'hi box2' }],
            });
            assert.ok(c.choices[0].message.content.length > 0);
            assert.equal((await psOf(dir, 'other')).host, 'box2');
            assert.ok(fs.existsSync(path.join(home2, '.yard/logs/other.log')));
        });

        await t.test('hostile values reach the engine literally', async () => {
            const r = await yard('start', 'hostile', '--wait');
            assert.equal(r.code, 0, r.stderr);
            const row = await psOf(dir, 'hostile');
            // the group's leader is the wrapper that records the exit status; the engine is its child
            const engine = h.childrenOf(row.pid)[0];
            const env = fs.readFileSync(`/proc/${engine}/environ`, 'utf8').split('\0');
            assert.ok(env.includes(`YARD_TEST_NOTE=$(touch ${pwned}); echo '\`touch ${pwned}\`'`), env.join('\n'));
            assert.ok(h.cmdlineOf(engine).includes(`x; touch ${pwned}`));
            assert.equal(fs.existsSync(pwned), false, 'nothing ran');
            const s = await yard('stop', 'hostile');
            assert.equal(s.code, 0, s.stderr);
        });

        await t.test('sshd killed: unknown and 503; back: re-adopted', async () => {
            assert.equal((await yard('start', 'big', '--wait')).code, 0);
            const bigPid = (await psOf(dir, 'big')).pid;
            killSshd(sshd);
            await h.waitState(dir, 'remote', 'unknown', 20000);
            await h.waitState(dir, 'big', 'unknown', 20000);
            // a stop is taken, not waited for: it completes when the pod answers
            const st = await yard('stop', 'big');
            assert.equal(st.code, 0, st.stderr);
            assert.match(st.stdout, /'big' is on pod 'box', which does not answer: it stops when the pod answers/);
            assert.equal((await psOf(dir, 'big')).state, 'stopping');
            assert.ok(h.pidAlive(pid), 'the engine itself keeps running');
            // the other pod is not concerned
            assert.equal((await psOf(dir, 'other')).state, 'ready');
            const o = await client.chat.completions.create({
                model: 'other',
                messages: [{ role: 'user', content: 'still fine?' }],
            });
            assert.ok(o.choices[0].message.content.length > 0);
            const r = await h.httpPost(
                `http://127.0.0.1:${port}/v1/chat/completions`,
                JSON.stringify({ model: 'remote', messages: [{ role: 'user', content: 'hi' }] }),
                { headers: { 'content-type': 'application/json' } },
            );
            assert.equal(r.status, 503, r.body);
            const msg = JSON.parse(r.body).error.message;
            assert.match(msg, /pod 'box'.*does not answer/);
            // Retry-After is when yard tries the pod next (its backoff), as the message says
            const inS = Number(/retries in (\d+) s/.exec(msg)[1]);
            assert.equal(Number(r.headers['retry-after']), inS);
            assert.ok(inS >= 1 && inS <= 30, msg);
            // a daemon stopped now does not wait for the pod: its rows keep the pids...
            await d.stop(10000);
            assert.ok(h.pidAlive(pid) && h.pidAlive(bigPid), 'nothing on the pod was touched');
            // ...and the next daemon, once the pod answers, adopts one and finishes stopping the other
            await sshd.restart();
            d = await h.startDaemon({ config, stateDir: dir });
            await h.waitState(dir, 'remote', 'ready', 60000);
            await h.waitState(dir, 'big', 'stopped', 60000);
            await h.waitFor(() => !h.pidAlive(bigPid), { timeoutMs: 20000, what: "big's engine gone" });
            const row = await psOf(dir, 'remote');
            assert.equal(row.pid, pid, 'the same process, adopted again');
            const c = await client.chat.completions.create({
                model: 'remote',
                messages: [{ role: 'user', content: 'back?' }],
            });
            assert.ok(c.choices[0].message.content.length > 0);
        });

        await t.test('kill -9 of the daemon: the next one re-adopts the remote engine', async () => {
            d.kill('SIGKILL');
            await d.waitExit();
            assert.ok(h.pidAlive(pid));
            d = await h.startDaemon({ config, stateDir: dir });
            await h.waitState(dir, 'remote', 'ready', 30000);
            const row = await psOf(dir, 'remote');
            assert.equal(row.pid, pid);
            assert.equal(row.host, 'box');
            const c = await client.chat.completions.create({
                model: 'remote',
                messages: [{ role: 'user', content: 'still there?' }],
            });
            assert.ok(c.choices[0].message.content.length > 0);
        });

        await t.test('yard stop ends the remote group', async () => {
            const r = await yard('stop', 'remote');
            assert.equal(r.code, 0, r.stderr);
            await h.waitFor(() => !h.pidAlive(pid), { timeoutMs: 15000, what: 'the engine gone' });
            assert.equal((await psOf(dir, 'remote')).state, 'stopped');
        });

        await t.test('start --pod runs a local model on the pod', async () => {
            const r = await yard('start', 'here', '--pod', 'box', '--wait');
            assert.equal(r.code, 0, r.stderr);
            const row = await psOf(dir, 'here');
            assert.equal(row.host, 'box');
            const busy = await yard('start', 'here', '--pod', 'nowhere');
            assert.equal(busy.code, 1);
            assert.match(busy.stderr, /stop it first/);
            assert.equal((await yard('stop', 'here')).code, 0);
        });

        await t.test('models gone from the config while no daemon ran are stopped', async () => {
            assert.equal((await yard('start', 'remote', '--wait')).code, 0);
            assert.equal((await yard('start', 'other', '--wait')).code, 0);
            const remotePid = (await psOf(dir, 'remote')).pid;
            const otherPid = (await psOf(dir, 'other')).pid;
            assert.equal((await yard('start', 'loc', '--wait')).code, 0);
            const localPid = (await psOf(dir, 'loc')).pid;
            assert.equal((await psOf(dir, 'loc')).host, 'local');
            assert.ok(h.pidAlive(remotePid) && h.pidAlive(otherPid) && h.pidAlive(localPid));
            d.kill('SIGKILL');
            await d.waitExit();
            const text = fs.readFileSync(config, 'utf8');
            // keep only the local model
            const kept = text.slice(0, text.indexOf('models:\n')) + 'models:\n' +
                text.slice(text.indexOf('  here:\n'));
            fs.writeFileSync(config, kept);
            d = await h.startDaemon({ config, stateDir: dir });
            await h.waitFor(
                () => !h.pidAlive(remotePid) && !h.pidAlive(otherPid) && !h.pidAlive(localPid),
                { timeoutMs: 20000, what: 'the removed engines stopped, remote and local' },
            );
            await h.waitFor(
                async () =>
                    (await h.yardJson(['ps', '--json'], { stateDir: dir })).map((r) => r.name).join() ===
                    'here',
                { timeoutMs: 20000, what: 'only the configured model left in yard ps' },
            );
        });
    } finally {
        held?.destroy();
        taken?.close();
        await d.stop();
    }
});
