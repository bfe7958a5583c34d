// Engines in cgroups: an engine whose child leaves its process group (setsid),
// and a wrapper that exits at once after starting the engine, die whole with
// `yard stop`, and the next start gets the same port; a daemon restarted
// after the engine's leader died adopts what is left in its cgroup and stops
// it; `yard gpus` attributes the escaped holder of GPU memory by its cgroup;
// without a writable cgroup2 hierarchy the daemon says so once and uses
// process groups.
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
    assert,
    MOCK_ENGINE_BIN,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    yardJson,
    ps,
    waitFor,
    pidAlive,
    pgidOf,
    freePort,
} from './lib/harness.mjs';

const GiB = 1024 ** 3;
const mock = (flavor, extra = '') =>
    `${MOCK_ENGINE_BIN} --flavor ${flavor} --port \${PORT} --name \${NAME} ${extra}`.trim();

async function daemonWith(models, { top = '', dir = tmpdir(), args = [], env = {} } = {}) {
    const port = await freePort();
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n${top}`;
    yaml += `defaults: { stop_timeout: 500ms, startup_timeout: 20s }\nmodels:\n`;
    for (const [name, body] of Object.entries(models)) {
        yaml += `  ${name}:\n`;
        for (const [k, v] of Object.entries(body)) yaml += `    ${k}: ${JSON.stringify(v)}\n`;
    }
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir, args, env });
    return { dir, config, d };
}

const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);

// Where the daemon puts its engines' cgroups (its start line), or null without cgroups.
function cgroupRoot(d) {
    const m = d.logText().match(/engines run in their own cgroups under '([^']+)'/);
    return m ? m[1] : null;
}

// The engine's cgroup: engine-N, whose xattr user.yard.engine names its leader's pid and
// start time (the kernel made the engine there, before its pid was known), or PID-START
// (where the engine moved in itself). Node reads no xattr: python3 does.
function engineCgroup(root, pid) {
    const name = fs.readdirSync(root).find((n) => n.startsWith(`${pid}-`));
    if (name) return path.join(root, name);
    const r = spawnSync('python3', [
        '-c',
        'import os,sys\nfor n in os.listdir(sys.argv[1]):\n' +
            '  p=os.path.join(sys.argv[1],n)\n' +
            '  try: print(n, os.getxattr(p,"user.yard.engine").decode())\n' +
            '  except OSError: pass',
        root,
    ]);
    assert.equal(r.status, 0, String(r.stderr));
    const line = String(r.stdout)
        .split('\n')
        .find((l) => l.split(' ')[1]?.startsWith(`${pid}-`));
    return line ? path.join(root, line.split(' ')[0]) : null;
}

function cgroupPids(cg) {
    try {
        return fs
            .readFileSync(path.join(cg, 'cgroup.procs'), 'utf8')
            .split('\n')
            .filter(Boolean)
            .map(Number);
    } catch {
        return [];
    }
}

// Processes this test must not leave behind, whatever happens.
const started = new Set();
function killAll() {
    for (const pid of started) {
        try {
            process.kill(pid, 'SIGKILL');
        } catch {
            // gone
        }
    }
}
process.on('exit', killAll);

// Waits until the engine led by pid has a process outside its process group in its cgroup.
async function escapee(cg, pid) {
    return waitFor(
        () => {
            const pids = cgroupPids(cg);
            for (const p of pids) started.add(p);
            return pids.find((p) => p !== pid && pidAlive(p) && pgidOf(p) !== pid) || false;
        },
        { what: 'a process of the engine outside its process group' }
    );
}

test('stop: an engine whose child called setsid() leaves nothing behind; the next start gets the same port', async (t) => {
    const { dir, d } = await daemonWith({
        m: { engine: 'vllm', cmd: mock('vllm', '--load-time 100ms --fail setsid') },
    });
    try {
        const root = cgroupRoot(d);
        if (!root) return t.skip('no writable cgroup v2 hierarchy here');
        const r = await yard(['start', 'm', '--wait'], { stateDir: dir });
        assert.equal(r.code, 0, r.stderr);
        const e = await entry(dir, 'm');
        const cg = engineCgroup(root, e.pid);
        assert.ok(cg, `no cgroup for pid ${e.pid} under ${root}`);
        const child = await escapee(cg, e.pid);
        const members = cgroupPids(cg);
        assert.ok(members.includes(e.pid) && members.includes(child));

        const s = await yard(['stop', 'm'], { stateDir: dir });
        assert.equal(s.code, 0, s.stderr);
        for (const pid of members) assert.ok(!pidAlive(pid), `pid ${pid} survived stop`);
        assert.ok(!fs.existsSync(cg), `${cg} was not removed`);

        // The port the escaped child held is free again.
        assert.equal((await yard(['start', 'm', '--wait'], { stateDir: dir })).code, 0);
        const again = await entry(dir, 'm');
        assert.equal(again.port, e.port);
        started.add(again.pid);
        await escapee(engineCgroup(root, again.pid), again.pid);
    } finally {
        await d.stop();
        killAll();
    }
    // Stopping the daemon stopped the engine: its cgroups are gone with it.
    assert.ok(!fs.existsSync(cgroupRoot(d)), 'the daemon left its cgroup directory');
});

test('a wrapper that exits at once (setsid -f ENGINE) runs, is ready, and stops whole', async (t) => {
    const { dir, d } = await daemonWith({
        w: { engine: 'vllm', cmd: `setsid -f ${mock('vllm', '--load-time 100ms')}` },
    });
    try {
        const root = cgroupRoot(d);
        if (!root) return t.skip('no writable cgroup v2 hierarchy here');
        const r = await yard(['start', 'w', '--wait'], { stateDir: dir });
        assert.equal(r.code, 0, r.stderr + r.stdout);
        const e = await entry(dir, 'w');
        assert.equal(e.state, 'ready');
        const cg = engineCgroup(root, e.pid);
        const engine = await escapee(cg, e.pid);
        assert.ok(!pidAlive(e.pid), 'the wrapper should have exited');
        assert.equal((await yard(['stop', 'w'], { stateDir: dir })).code, 0);
        assert.ok(!pidAlive(engine), `the engine ${engine} survived stop`);
        assert.equal((await entry(dir, 'w')).state, 'stopped');
        assert.equal((await yard(['start', 'w', '--wait'], { stateDir: dir })).code, 0);
        const again = await entry(dir, 'w');
        assert.equal(again.port, e.port);
        await escapee(engineCgroup(root, again.pid), again.pid);
    } finally {
        await d.stop();
        killAll();
    }
});

test('adoption: a leader that died while no daemon ran leaves its cgroup running; stop kills it; yard gpus names it', async (t) => {
    const dir = tmpdir();
    const ledger = path.join(dir, 'ledger');
    fs.writeFileSync(ledger, '');
    const models = {
        m: {
            engine: 'vllm',
            cmd: mock('vllm', `--load-time 100ms --fail setsid --vram 4GiB --ledger ${ledger}`),
            vram: '4GiB',
            gpus: [0],
        },
    };
    const top =
        `gpus: ${JSON.stringify([{ index: 0, name: 'Mock A 40G', memory: '40GiB' }])}\n` +
        `gpu_ledger: ${JSON.stringify(ledger)}\n`;
    let { d } = await daemonWith(models, { top, dir, args: ['--keep-engines'] });
    let d2 = null;
    try {
        const root = cgroupRoot(d);
        if (!root) return t.skip('no writable cgroup v2 hierarchy here');
        const r = await yard(['start', 'm', '--wait'], { stateDir: dir });
        assert.equal(r.code, 0, r.stdout + r.stderr + d.logText());
        const e = await entry(dir, 'm');
        started.add(e.pid);
        const cg = engineCgroup(root, e.pid);
        const child = await escapee(cg, e.pid);
        await d.stop(); // --keep-engines: the engine runs on
        assert.ok(pidAlive(e.pid) && pidAlive(child));
        // The leader dies while no daemon runs; what it left runs on in its cgroup.
        process.kill(e.pid, 'SIGKILL');
        await waitFor(() => !pidAlive(e.pid), { what: 'the leader to die' });
        assert.ok(pidAlive(child));

        d2 = (await daemonWith(models, { top, dir })).d;
        // Adopted: it runs (the first probe decides between starting and ready).
        const adopted = await waitFor(
            async () => {
                const a = await entry(dir, 'm');
                return a.state === 'starting' || a.state === 'ready' ? a : false;
            },
            { what: 'm to be adopted' }
        );
        assert.equal(adopted.pid, e.pid);
        assert.match(d2.logText(), /adopting 'm'/);

        // yard gpus: the escaped holder of the memory is m's by its cgroup, with the leader dead.
        const inv = await waitFor(
            async () => {
                const v = await yardJson(['gpus', '--json'], { stateDir: dir });
                const p = v.gpus[0].processes.find((q) => q.pid === child);
                return p ? v : false;
            },
            { what: 'the escaped child in yard gpus' }
        );
        const held = inv.gpus[0].processes.find((q) => q.pid === child);
        assert.equal(held.model, 'm');
        assert.equal(held.used, 4 * GiB);

        const s = await yard(['stop', 'm'], { stateDir: dir });
        assert.equal(s.code, 0, s.stderr);
        assert.ok(!pidAlive(child), `the escaped child ${child} survived stop`);
        assert.equal((await entry(dir, 'm')).state, 'stopped');
        assert.ok(!fs.existsSync(cg), `${cg} was not removed`);
    } finally {
        if (d2) await d2.stop();
        if (!d.exited) await d.stop();
        killAll();
    }
});

test('adoption: a removed model whose leader died is stopped whole by the next daemon', async (t) => {
    const dir = tmpdir();
    const m = { engine: 'vllm', cmd: mock('vllm', '--load-time 100ms --fail setsid') };
    const { d } = await daemonWith({ m }, { dir, args: ['--keep-engines'] });
    let d2 = null;
    try {
        const root = cgroupRoot(d);
        if (!root) return t.skip('no writable cgroup v2 hierarchy here');
        assert.equal((await yard(['start', 'm', '--wait'], { stateDir: dir })).code, 0);
        const e = await entry(dir, 'm');
        started.add(e.pid);
        const cg = engineCgroup(root, e.pid);
        const child = await escapee(cg, e.pid);
        await d.stop();
        process.kill(e.pid, 'SIGKILL');
        await waitFor(() => !pidAlive(e.pid), { what: 'the leader to die' });
        // The next daemon's config no longer has m: what m left is stopped, not forgotten.
        const other = { engine: 'vllm', cmd: mock('vllm', '--load-time 100ms') };
        d2 = (await daemonWith({ other }, { dir })).d;
        await waitFor(() => !pidAlive(child), { what: `the escaped child ${child} to be stopped` });
        await waitFor(() => !fs.existsSync(cg), { what: `${cg} to be removed` });
        assert.match(d2.logText(), /'m' is no longer configured; stopping it/);
    } finally {
        if (d2) await d2.stop();
        if (!d.exited) await d.stop();
        killAll();
    }
});

test('without a writable cgroup v2 hierarchy: one line at start, engines in process groups', async () => {
    const ro = tmpdir('yard-cgroup-ro-');
    fs.chmodSync(ro, 0o555);
    const { dir, d } = await daemonWith(
        { m: { engine: 'vllm', cmd: mock('vllm', '--load-time 100ms') } },
        { env: { YARD_CGROUP_ROOT: ro } }
    );
    try {
        const lines = d.logText().split('\n').filter((l) => l.includes('cgroup'));
        assert.equal(lines.length, 1, lines.join('\n'));
        assert.match(lines[0], /no writable cgroup v2 hierarchy \(.+\): engines run in process groups only/);
        assert.equal(cgroupRoot(d), null);
        assert.equal((await yard(['start', 'm', '--wait'], { stateDir: dir })).code, 0);
        const e = await entry(dir, 'm');
        started.add(e.pid);
        assert.equal(pgidOf(e.pid), e.pid);
        assert.equal((await yard(['stop', 'm'], { stateDir: dir })).code, 0);
        assert.ok(!pidAlive(e.pid));
        // Nothing was made in the directory that is not a cgroup.
        assert.deepEqual(fs.readdirSync(ro), []);
        const again = d.logText().split('\n').filter((l) => l.includes('no writable cgroup'));
        assert.equal(again.length, 1, 'said more than once');
    } finally {
        await d.stop();
        fs.chmodSync(ro, 0o755);
        killAll();
    }
});
