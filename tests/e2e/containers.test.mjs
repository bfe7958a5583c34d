// Engines run as containers (stop_cmd): a stand-in docker (tools/fake-docker)
// whose containers are its daemon's children, not the client's, and whose
// published ports are held by the daemon's proxy, as docker's are. yard
// starts `docker run`, the client exits (-d) or is killed while the container
// serves on; a stop runs stop_cmd; a daemon killed with SIGKILL adopts the
// container by its port on restart instead of starting a second one.
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
    assert,
    MOCK_ENGINE_BIN,
    tmpdir,
    writeConfig,
    startDaemon,
    startProcess,
    yard,
    ps,
    waitState,
    waitFor,
    httpPost,
    freePort,
    pidAlive,
    socketAccepts,
} from './lib/harness.mjs';
import { routerDaemon } from './lib/router-helpers.mjs';

const FAKE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tools', 'fake-docker');

// A docker daemon stand-in, and `docker` (by that name, as yard's cmd check reads it) for it.
async function fakeDocker() {
    const dir = tmpdir('yard-docker-');
    const sock = path.join(dir, 'docker.sock');
    const bin = path.join(dir, 'docker');
    fs.symlinkSync(FAKE, bin);
    const daemon = startProcess(FAKE, ['-H', `unix://${sock}`, 'dockerd'], { name: 'fake-dockerd' });
    await waitFor(() => socketAccepts(sock), { what: 'fake dockerd listening' });
    const docker = `${bin} -H unix://${sock}`;
    const run = async (...args) => {
        const p = startProcess(bin, ['-H', `unix://${sock}`, ...args], { name: 'docker-cli' });
        const r = await p.waitExit(20000);
        return { code: r && r.code, out: p.logText() };
    };
    const running = async () =>
        (await run('ps')).out.split('\n').filter(Boolean).map((l) => l.split(' ')[1]);
    const all = async () =>
        (await run('ps', '-a')).out.split('\n').filter(Boolean).map((l) => l.split(' ')[1]);
    return { dir, daemon, docker, run, running, all };
}

// The daemon on models (routerDaemon), in stateDir when given: a restart finds its state.
const daemonWith = (models, stateDir) =>
    routerDaemon({ models, defaults: { stop_timeout: '5s' }, dir: stateDir || tmpdir() });

const chat = (base, model) =>
    httpPost(`${base}/v1/chat/completions`, {
        model,
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 3,
    });

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);

test('docker run -d: ready on the proxied port, chat, stop runs stop_cmd and the container is gone', async () => {
    const fd = await fakeDocker();
    const ctr = await freePort();
    const { dir, d, base } = await daemonWith({
        m: {
            engine: 'vllm',
            cmd: `${fd.docker} run -d --rm --name yard-\${NAME} -p \${PORT}:${ctr} ${MOCK_ENGINE_BIN} --flavor vllm --port ${ctr} --name \${NAME}`,
            stop_cmd: `${fd.docker} stop yard-\${NAME}`,
        },
    });
    assert.equal((await yard(['start', 'm'], { stateDir: dir })).code, 0);
    const e = await waitState(dir, 'm', 'ready', 30000);
    // The client exited at once; the port is the proxy's, outside the started tree.
    assert.ok(!pidAlive(e.pid), 'docker run -d exited');
    assert.match(e.reason, /readiness judged by served name/, e.reason);
    assert.deepEqual(await fd.running(), ['yard-m']);
    assert.match(d.logText(), /its command exited with code 0 while loading; waiting for the engine/);
    const res = await chat(base, 'm');
    assert.equal(res.status, 200, res.body);

    const st = await yard(['stop', 'm'], { stateDir: dir });
    assert.equal(st.code, 0, st.stderr);
    await waitState(dir, 'm', 'stopped', 20000);
    assert.deepEqual(await fd.all(), [], 'the container is gone (--rm)');
    const log = fs.readFileSync(path.join(dir, 'logs', 'm.log'), 'utf8');
    assert.match(log, /\[yard\] stop_cmd: running .*stop yard-m/);
    assert.match(log, /\[yard\] stop_cmd stdout: yard-m/);
});

test('a foreground client killed while serving does not fail the model; kill -9 of the daemon adopts the container', async () => {
    const fd = await fakeDocker();
    const ctr = await freePort();
    const dir = tmpdir();
    let { d, base, config } = await daemonWith(
        {
            m: {
                engine: 'vllm',
                cmd: `${fd.docker} run --rm --name yard-\${NAME} -p \${PORT}:${ctr} ${MOCK_ENGINE_BIN} --flavor vllm --port ${ctr} --name \${NAME}`,
                stop_cmd: `${fd.docker} stop yard-\${NAME}`,
            },
        },
        dir
    );
    assert.equal((await yard(['start', 'm'], { stateDir: dir })).code, 0);
    const e = await waitState(dir, 'm', 'ready', 30000);
    assert.ok(pidAlive(e.pid), 'the attached client runs');
    process.kill(e.pid, 'SIGKILL');
    await waitFor(() => !pidAlive(e.pid), { what: 'the client gone' });
    // The exit is checked against the port at once: it answers, so the model stays ready.
    await waitFor(() => /'m' answers on port \d+ without its command: it serves on/.test(d.logText()), {
        what: 'the exit checked against the port',
    });
    assert.match(d.logText(), /its command killed by signal 9/);
    assert.equal((await entry(dir, 'm')).state, 'ready', d.logText());
    assert.equal((await chat(base, 'm')).status, 200);
    assert.deepEqual(await fd.running(), ['yard-m']);

    // kill -9 of the daemon; the next one adopts the container by its port.
    d.kill('SIGKILL');
    await d.waitExit(5000);
    d = await startDaemon({ config, stateDir: dir });
    await waitState(dir, 'm', 'ready', 30000);
    assert.match(d.logText(), /adopting 'm' by its port \d+: its command has exited/);
    assert.deepEqual(await fd.all(), ['yard-m'], 'no second container');
    // A start of the adopted model starts nothing more.
    assert.equal((await yard(['start', 'm'], { stateDir: dir })).code, 0);
    const after = await chat(base, 'm');
    assert.equal(after.status, 200, after.body + '\n' + d.logText());
    assert.deepEqual(await fd.all(), ['yard-m']);

    // The stop after adoption runs stop_cmd.
    assert.equal((await yard(['stop', 'm'], { stateDir: dir })).code, 0);
    await waitState(dir, 'm', 'stopped', 20000);
    assert.deepEqual(await fd.all(), []);
    await d.stop();
});

test('a stop_cmd that fails is reported with its output', async () => {
    const fd = await fakeDocker();
    const ctr = await freePort();
    const { dir } = await daemonWith({
        m: {
            engine: 'vllm',
            cmd: `${fd.docker} run -d --name yard-\${NAME} -p \${PORT}:${ctr} ${MOCK_ENGINE_BIN} --flavor vllm --port ${ctr} --name \${NAME}`,
            stop_cmd: `${fd.docker} stop nosuch-\${NAME}`,
        },
    });
    assert.equal((await yard(['start', 'm'], { stateDir: dir })).code, 0);
    await waitState(dir, 'm', 'ready', 30000);
    assert.equal((await yard(['stop', 'm'], { stateDir: dir })).code, 0);
    const s = await waitState(dir, 'm', 'stopped', 20000);
    assert.match(s.reason, /stop_cmd failed: .*No such container: nosuch-m/, s.reason);
    assert.match(s.reason, /stop it by hand/);
    // It still runs: yard said so rather than pretending.
    assert.deepEqual(await fd.running(), ['yard-m']);
    assert.equal((await fd.run('rm', '-f', 'yard-m')).code, 0);
});

test('stop_cmd is checked when the config loads', async () => {
    const dir = tmpdir();
    const bad = writeConfig(dir, 'models:\n  m:\n    cmd: "x --port ${PORT}"\n    stop_cmd: "docker stop ${NAMEX}"\n');
    const r = await yard(['check', '-c', bad], { stateDir: dir });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr + r.stdout, /models\.m\.stop_cmd: .*NAMEX/);
    const empty = writeConfig(dir, 'models:\n  m:\n    cmd: "x --port ${PORT}"\n    stop_cmd:\n', 'e.yaml');
    const r2 = await yard(['check', '-c', empty], { stateDir: dir });
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr + r2.stdout, /models\.m\.stop_cmd: empty command/);
});

test('a container that does not become ready is stopped with stop_cmd, and the failure says why', async () => {
    const fd = await fakeDocker();
    const ctr = await freePort();
    const { dir } = await daemonWith({
        m: {
            engine: 'vllm',
            cmd: `${fd.docker} run -d --rm --name yard-\${NAME} -p \${PORT}:${ctr} ${MOCK_ENGINE_BIN} --flavor vllm --port ${ctr} --name \${NAME} --load-time 1h`,
            stop_cmd: `${fd.docker} stop -t 1 yard-\${NAME}`,
            startup_timeout: '2s',
        },
    });
    assert.equal((await yard(['start', 'm'], { stateDir: dir })).code, 0);
    const f = await waitState(dir, 'm', 'failed', 30000);
    assert.match(f.reason, /did not become ready within 2s/, f.reason);
    // The container would hold its name (and a GPU) for nobody: stop_cmd ran after the failure.
    await waitFor(async () => (await fd.all()).length === 0, { what: 'the container stopped' });
    await waitFor(() => /\[yard\] stop_cmd: '.*stop -t 1 yard-m' exited 0/.test(
        fs.readFileSync(path.join(dir, 'logs', 'm.log'), 'utf8')), { what: 'stop_cmd in the log' });
});
