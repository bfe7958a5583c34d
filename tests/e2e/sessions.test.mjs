// Sessions over HTTP and the CLI, with real bubblewrap: create or get, exec
// streamed as SSE and as one JSON reply (stdin, exit codes), the lock (two
// concurrent execs serialise), the queue bound (503 with Retry-After), a
// timeout that kills what the command started, escapes refused (writing
// outside the volume, another session's files, symlinks out through the files
// API, '..'), stop and delete, api_keys, `yard session ls|exec|stop|rm`, and
// the sessions found again, stopped, after a restart and after kill -9. With
// cgroups, one sandbox per session: what a command leaves in the background
// outlives it (same pid namespace, /tmp and network for the next command) and
// dies with stop; pause freezes it with its memory, resume thaws it.
import { test, after } from 'node:test';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
    assert,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    yardJson,
    waitFor,
    freePort,
    httpRequest,
    httpGet,
    httpPost,
    httpOpen,
    parseSSE,
    processesMatching,
    cleanup,
    sandboxSkip,
    startProcess,
    YARD_BIN,
} from './lib/harness.mjs';

after(cleanup);

const skip = sandboxSkip();

async function daemonWithSessions({ extra = '', top = '', dir = tmpdir() } = {}) {
    fs.chmodSync(dir, 0o755); // the commands' user must reach the volumes
    const root = path.join(dir, 'vols');
    const port = await freePort();
    const yaml =
        `listen: 127.0.0.1:${port}\n${top}models: {}\n` +
        `sessions:\n  root: ${root}\n  user: nobody\n${extra}`;
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir });
    return { dir, root, config, d, base: `http://127.0.0.1:${port}` };
}

const json = (r) => JSON.parse(r.body);

async function create(base, id, opts) {
    const r = await httpPost(`${base}/v1/sessions`, id === undefined ? {} : { id }, opts);
    assert.ok(r.status === 200 || r.status === 201, `create ${id}: ${r.status} ${r.body}`);
    return json(r);
}

async function run(base, id, cmd, extra = {}) {
    const r = await httpPost(`${base}/v1/sessions/${id}/exec`, { cmd, stream: false, ...extra });
    assert.equal(r.status, 200, r.body);
    return json(r);
}

function assertError(r, status, code) {
    assert.equal(r.status, status, r.body);
    const e = json(r).error;
    assert.ok(e && typeof e.message === 'string' && e.message.length > 0, r.body);
    assert.equal(e.code, code, r.body);
    assert.ok('type' in e && 'param' in e, r.body);
}

// A raw request whose path is sent exactly as written (no client normalisation).
function rawRequest(base, method, rawPath) {
    const u = new URL(base);
    return new Promise((resolve, reject) => {
        const req = http.request({ host: u.hostname, port: u.port, method, path: rawPath, agent: false }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode, body }));
        });
        req.on('error', reject);
        req.end();
    });
}

test('create or get, list, show, exec streamed and in one reply, stdin, errors in OpenAI shape', { skip }, async () => {
    const { base, d, root } = await daemonWithSessions();
    let r = await httpPost(`${base}/v1/sessions`, { id: 'alpha' });
    assert.equal(r.status, 201, r.body);
    assert.equal(json(r).id, 'alpha');
    assert.equal(json(r).state, 'active');
    r = await httpPost(`${base}/v1/sessions`, { id: 'alpha' });
    assert.equal(r.status, 200, r.body);
    const anon = await create(base);
    assert.match(anon.id, /^s-[0-9a-f]{16}$/);
    assert.ok(fs.statSync(path.join(root, 'alpha')).isDirectory());

    const list = json(await httpGet(`${base}/v1/sessions`));
    assert.deepEqual(list.data.map((s) => s.id).sort(), ['alpha', anon.id].sort());

    // SSE: stdout and stderr as they come, then exit with the code.
    r = await httpPost(`${base}/v1/sessions/alpha/exec`, {
        cmd: 'echo out; echo err >&2; cat; printf "caf\\303\\251"; exit 3',
        stdin: 'from stdin\n',
    });
    assert.equal(r.status, 200, r.body);
    assert.match(r.headers['content-type'], /text\/event-stream/);
    const events = parseSSE(r.body);
    const text = (name) =>
        events
            .filter((e) => e.event === name)
            .map((e) => JSON.parse(e.data).data)
            .join('');
    assert.equal(text('stdout'), 'out\nfrom stdin\ncafé');
    assert.equal(text('stderr'), 'err\n');
    const exit = events.at(-1);
    assert.equal(exit.event, 'exit');
    assert.equal(JSON.parse(exit.data).code, 3);

    // One JSON reply; the command's working directory is the volume, HOME too.
    const one = await run(base, 'alpha', 'echo hi > f.txt; pwd; echo $HOME; cat f.txt');
    assert.equal(one.code, 0);
    assert.equal(one.stdout, `${path.join(root, 'alpha')}\n${path.join(root, 'alpha')}\nhi\n`);
    assert.equal(fs.readFileSync(path.join(root, 'alpha', 'f.txt'), 'utf8'), 'hi\n');
    const shown = json(await httpGet(`${base}/v1/sessions/alpha`));
    assert.equal(shown.execs, 2);
    assert.equal(typeof shown.last_exec, 'number');

    assertError(await httpGet(`${base}/v1/sessions/nope`), 404, 'session_not_found');
    assertError(await httpPost(`${base}/v1/sessions`, { id: '../etc' }), 400, 'invalid_session_id');
    assertError(await httpPost(`${base}/v1/sessions/alpha/exec`, { stdin: 'x' }), 400, 'invalid_value');
    assertError(await httpPost(`${base}/v1/sessions/alpha/exec`, 'not json'), 400, 'invalid_json');
    assertError(
        await httpPost(`${base}/v1/sessions/alpha/exec`, { cmd: 'true', timeout_s: -1 }),
        400,
        'invalid_value'
    );
    assertError(await httpPost(`${base}/v1/sessions/alpha/frob`, {}), 404, 'unknown_endpoint');
    await d.stop();
});

test("a session's transitions reach event followers: GET /api/events and yard events -f", { skip }, async () => {
    const { dir, base } = await daemonWithSessions();
    await create(base, 'first');
    const stream = await httpOpen('GET', `${base}/api/events`);
    assert.equal(stream.status, 200);
    // yard events -f prints what the store has, then follows: once 'first' is out, it follows.
    const follow = startProcess(YARD_BIN, ['--state-dir', dir, 'events', '-f', '--json'], {
        name: 'yard events -f',
    });
    await waitFor(() => follow.logText().includes('session/first'), { what: 'the first dump' });
    await create(base, 'followed');
    assert.equal((await httpPost(`${base}/v1/sessions/followed/stop`, {})).status, 200);
    let text = '';
    await waitFor(
        async () => {
            const c = await stream.nextChunk(10000);
            text += c ?? '';
            return /"model":"session\/followed"[^\n]*"to":"stopped"/.test(text);
        },
        { timeoutMs: 20000, what: "the session's stop on /api/events" },
    );
    stream.abort();
    await waitFor(() => /session\/followed.*"to":"stopped"/.test(follow.logText()), {
        timeoutMs: 20000,
        what: "the session's stop in yard events -f",
    });
    await follow.stop();
});

test('the lock serialises two concurrent execs; past the queue bound 503 with Retry-After', { skip }, async () => {
    const { base, d } = await daemonWithSessions();
    await create(base, 'lock');
    // Each writes when it started and when it ended; the second must start after the first ended.
    const a = run(base, 'lock', 'date +%s%N > a.start; sleep 0.3; date +%s%N > a.end');
    const b = run(base, 'lock', 'date +%s%N > b.start; date +%s%N > b.end');
    await Promise.all([a, b]);
    const stamps = await run(base, 'lock', 'cat a.start a.end b.start b.end');
    const [aStart, aEnd, bStart, bEnd] = stamps.stdout.trim().split('\n').map(BigInt);
    assert.ok(aStart <= aEnd && aEnd <= bStart && bStart <= bEnd, stamps.stdout);

    // One command holds the lock until a file appears; 16 more wait; the next is refused.
    const blocker = run(base, 'lock', 'while [ ! -e go ]; do sleep 0.02; done; echo went');
    await waitFor(async () => json(await httpGet(`${base}/v1/sessions/lock`)).running, {
        what: 'the blocker to run',
    });
    const waiting = [];
    for (let i = 0; i < 16; i++) waiting.push(run(base, 'lock', `echo ${i}`));
    await waitFor(async () => json(await httpGet(`${base}/v1/sessions/lock`)).queued === 16, {
        what: '16 commands queued',
    });
    const refused = await httpPost(`${base}/v1/sessions/lock/exec`, { cmd: 'true', stream: false });
    assertError(refused, 503, 'session_busy');
    assert.ok(Number(refused.headers['retry-after']) > 0, JSON.stringify(refused.headers));
    // Files in go around the lock: the blocker sees the file and ends, then the queue drains in order.
    const put = await httpRequest('PUT', `${base}/v1/sessions/lock/files/go`, '');
    assert.equal(put.status, 200, put.body);
    assert.equal((await blocker).stdout, 'went\n');
    const outs = await Promise.all(waiting);
    assert.deepEqual(
        outs.map((o) => o.stdout),
        [...Array(16).keys()].map((i) => `${i}\n`)
    );
    await d.stop();
});

test('a timeout kills the command and what it left in the background', { skip }, async () => {
    const { base, d } = await daemonWithSessions();
    await create(base, 'slow');
    const tag = `31.${process.pid % 1000}${Math.floor(Math.random() * 1000)}`;
    const r = await run(base, 'slow', `setsid sleep ${tag} & sleep ${tag}; echo never`, { timeout_s: 0.5 });
    assert.equal(r.timed_out, true);
    assert.equal(r.code, null);
    assert.equal(r.stdout, '');
    await waitFor(() => processesMatching(`sleep ${tag}`).length === 0, {
        what: `no 'sleep ${tag}' left`,
    });
    // The lock is free again.
    assert.equal((await run(base, 'slow', 'echo next')).stdout, 'next\n');
    await d.stop();
});

test('escapes are refused: outside the volume, another session, symlinks and .. through the files API', { skip }, async () => {
    const { base, d, root, dir } = await daemonWithSessions();
    await create(base, 'one');
    await create(base, 'two');
    const outside = path.join(dir, 'outside.txt');
    fs.writeFileSync(outside, 'host secret\n');
    // Even a directory anyone may write stays read-only inside (not under /tmp: that one is private).
    const open = fs.mkdtempSync('/var/tmp/yard-e2e-');
    after(() => fs.rmSync(open, { recursive: true, force: true }));
    fs.chmodSync(open, 0o777);

    // From a command: the system is read-only, other volumes are hidden.
    let r = await run(base, 'one', `echo x > ${path.join(open, 'escaped')}; echo rc=$?`);
    assert.match(r.stdout, /rc=[1-9]/);
    assert.match(r.stderr, /Read-only file system/);
    assert.ok(!fs.existsSync(path.join(open, 'escaped')));
    await run(base, 'two', 'echo two-secret > secret');
    r = await run(base, 'one', `cat ${path.join(root, 'two', 'secret')}; ls ${root}`);
    assert.doesNotMatch(r.stdout, /two-secret/);
    assert.doesNotMatch(r.stdout, /two/);

    // Symlinks made in the volume that point out.
    r = await run(base, 'one', `ln -s ${outside} abs; ln -s ../.. up; ln -s ../two other; mkdir -p d; echo in > d/in.txt; ln -s d/in.txt inside`);
    assert.equal(r.code, 0, r.stderr);
    assertError(await httpGet(`${base}/v1/sessions/one/files/abs`), 403, 'file_refused');
    assertError(await httpGet(`${base}/v1/sessions/one/files/up/outside.txt`), 403, 'file_refused');
    assertError(await httpGet(`${base}/v1/sessions/one/files/other/secret`), 403, 'file_refused');
    assertError(await httpRequest('PUT', `${base}/v1/sessions/one/files/up/planted`, 'x'), 403, 'file_refused');
    assertError(await httpRequest('PUT', `${base}/v1/sessions/one/files/abs`, 'x'), 403, 'file_refused');
    assert.equal(fs.readFileSync(outside, 'utf8'), 'host secret\n');
    assert.ok(!fs.existsSync(path.join(dir, 'planted')));
    // A symlink that stays inside is followed for reading.
    r = await httpGet(`${base}/v1/sessions/one/files/inside`);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.body, 'in\n');

    // '..' however it is written.
    assertError(await rawRequest(base, 'GET', '/v1/sessions/one/files/../two/secret'), 400, 'file_refused');
    assertError(await rawRequest(base, 'GET', '/v1/sessions/one/files/%2E%2E/two/secret'), 400, 'file_refused');
    assertError(await rawRequest(base, 'GET', '/v1/sessions/one/files/d/..%2F..%2Ftwo'), 400, 'invalid_path');
    assertError(await rawRequest(base, 'PUT', '/v1/sessions/one/files//etc/x'), 400, 'file_refused');

    // Files in and out, directories made on the way, bytes as they are.
    const bytes = Buffer.from([0, 1, 2, 255, 254, 10]);
    r = await httpRequest('PUT', `${base}/v1/sessions/one/files/a/b/c.bin`, bytes);
    assert.equal(r.status, 200, r.body);
    assert.ok(fs.readFileSync(path.join(root, 'one', 'a/b/c.bin')).equals(bytes));
    assert.equal(fs.statSync(path.join(root, 'one', 'a/b/c.bin')).uid, 65534);
    r = await run(base, 'one', 'od -An -tu1 a/b/c.bin | tr -s " "');
    assert.equal(r.stdout.trim(), '0 1 2 255 254 10');
    assertError(await httpGet(`${base}/v1/sessions/one/files/a`), 400, 'file_refused');
    assertError(await httpGet(`${base}/v1/sessions/one/files/none`), 404, 'file_refused');
    await d.stop();
});

test('stop ends what runs; delete removes the volume; api_keys guard the endpoints', { skip }, async () => {
    const { base, d, root } = await daemonWithSessions({ top: 'api_keys: [ "k1" ]\n' });
    const auth = { headers: { authorization: 'Bearer k1' } };
    assertError(await httpGet(`${base}/v1/sessions`), 401, 'invalid_api_key');
    await create(base, 'st', auth);
    const running = httpRequest(
        'POST',
        `${base}/v1/sessions/st/exec`,
        { cmd: 'sleep 30', stream: false },
        auth
    );
    await waitFor(async () => json(await httpGet(`${base}/v1/sessions/st`, auth)).running, {
        what: 'the command to run',
    });
    let r = await httpPost(`${base}/v1/sessions/st/stop`, {}, auth);
    assert.equal(r.status, 200, r.body);
    assert.equal(json(r).state, 'stopped');
    assertError(await running, 409, 'session_stopped');
    // The next exec starts it again.
    const again = json(await httpPost(`${base}/v1/sessions/st/exec`, { cmd: 'echo back', stream: false }, auth));
    assert.equal(again.stdout, 'back\n');
    assert.equal(json(await httpGet(`${base}/v1/sessions/st`, auth)).state, 'active');

    r = await httpRequest('DELETE', `${base}/v1/sessions/st`, undefined, auth);
    assert.equal(r.status, 200, r.body);
    assert.equal(json(r).deleted, true);
    assert.ok(!fs.existsSync(path.join(root, 'st')));
    assertError(await httpGet(`${base}/v1/sessions/st`, auth), 404, 'session_not_found');
    await d.stop();
});

test('yard session ls, exec, stop, rm; sessions are found again after a restart and after kill -9', { skip }, async () => {
    const dir = tmpdir();
    let { base, d, root, config } = await daemonWithSessions({ dir });
    await create(base, 'cli');
    let r = await yard(['session', 'exec', 'cli', '--', 'echo out; echo err >&2; exit 7'], { stateDir: dir });
    assert.equal(r.code, 7);
    assert.equal(r.stdout, 'out\n');
    assert.match(r.stderr, /err/);
    r = await yard(['session', 'exec', 'cli', '--timeout', '300ms', '--', 'sleep 20'], { stateDir: dir });
    assert.equal(r.code, 124);
    let ls = await yardJson(['session', 'ls', '--json'], { stateDir: dir });
    assert.equal(ls.length, 1);
    assert.equal(ls[0].id, 'cli');
    assert.equal(ls[0].execs, 2);
    r = await yard(['session', 'ls'], { stateDir: dir });
    assert.match(r.stdout, /^ID\s+STATE/);
    r = await yard(['session', 'exec', 'nope', '--', 'true'], { stateDir: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no session 'nope'/);

    // A clean restart: the session is there, stopped, and runs again.
    await d.stop();
    d = await startDaemon({ config, stateDir: dir });
    ls = await yardJson(['session', 'ls', '--json'], { stateDir: dir });
    assert.equal(ls[0].state, 'stopped');
    assert.equal(ls[0].reason, 'daemon restarted');
    assert.equal(ls[0].execs, 2);
    r = await yard(['session', 'exec', 'cli', '--', 'echo again'], { stateDir: dir });
    assert.equal(r.stdout, 'again\n');

    // kill -9 while a command runs: the command dies with the daemon, the session comes back.
    const tag = `32.${process.pid % 1000}${Math.floor(Math.random() * 1000)}`;
    const pending = httpPost(`${base}/v1/sessions/cli/exec`, { cmd: `sleep ${tag}`, stream: false }).catch(() => null);
    await waitFor(() => processesMatching(`sleep ${tag}`).length > 0, { what: 'the command to run' });
    d.kill('SIGKILL');
    await d.waitExit();
    await pending;
    await waitFor(() => processesMatching(`sleep ${tag}`).length === 0, { what: 'the command to die with the daemon' });
    d = await startDaemon({ config, stateDir: dir });
    ls = await yardJson(['session', 'ls', '--json'], { stateDir: dir });
    assert.equal(ls[0].state, 'stopped');
    assert.equal(ls[0].reason, 'daemon restarted');

    r = await yard(['session', 'stop', 'cli'], { stateDir: dir });
    assert.equal(r.code, 0, r.stderr);
    r = await yard(['session', 'rm', 'cli'], { stateDir: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!fs.existsSync(path.join(root, 'cli')));
    assert.deepEqual(await yardJson(['session', 'ls', '--json'], { stateDir: dir }), []);
    await d.stop();
});

// The daemon's sessions get cgroups where it can write a cgroup2 hierarchy.
function cgroupsHere() {
    try {
        return fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(' - cgroup2 ');
    } catch {
        return false;
    }
}
const skipBox = skip || (!cgroupsHere() ? 'no cgroup2 hierarchy here' : false);

function cgroupEvents(cg) {
    const text = fs.readFileSync(path.join(cg, 'cgroup.events'), 'utf8');
    return Object.fromEntries(text.trim().split('\n').map((l) => l.split(' ')));
}

test('one sandbox per session: the background outlives its command, stop kills it, pause keeps its memory', { skip: skipBox }, async () => {
    const { base, d, root } = await daemonWithSessions();
    const rec = await create(base, 'box');
    assert.ok(rec.cgroup, `no cgroup for the session: ${JSON.stringify(rec)}\n${d.logText()}`);
    const tag = `33.${process.pid % 1000}${Math.floor(Math.random() * 1000)}`;

    // A counter in the background: its value lives in the shell's memory only.
    let r = await run(base, 'box', `(i=0; while :; do i=$((i+1)); echo $i > count; sleep 0.02; done) >/dev/null 2>&1 & echo $! > counter.pid; sleep ${tag} >/dev/null 2>&1 & echo shared > /tmp/mark; echo started`);
    assert.equal(r.stdout, 'started\n', r.stderr);
    r = await run(base, 'box', 'kill -0 $(cat counter.pid) && echo alive; cat /tmp/mark; ps -e -o comm= | sort -u | tr "\\n" " "');
    assert.match(r.stdout, /^alive\nshared\n/, r.stderr);
    assert.match(r.stdout, /sleep/);
    assert.ok(processesMatching(`sleep ${tag}`).length > 0, 'the background sleep ended with its command');
    // Each command enters the sandbox through the session gate: in its own cgroup under
    // the session's, as the session's user, in the volume, without privileges and no way back.
    const tag2 = `gate-${tag}`;
    const pending = run(base, 'box', `: ${tag2}; id -u; id -g; pwd; grep -E "^(CapEff|NoNewPrivs):" /proc/self/status; grep "^0::" /proc/self/cgroup; while [ ! -e go ]; do sleep 0.02; done`);
    const gates = await waitFor(
        () => {
            const g = processesMatching(tag2).filter((p) => {
                const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'latin1').split('\0');
                return path.basename(argv[0]) === 'session-gate';
            });
            return g.length > 0 && g;
        },
        { what: 'the command under the session gate' }
    );
    assert.ok(gates.length >= 1);
    fs.writeFileSync(path.join(root, 'box', 'go'), '');
    r = await pending;
    const [uid, gid, cwd, capEff, nnp, cg2] = r.stdout.trim().split('\n');
    assert.deepEqual([uid, gid, cwd], ['65534', '65534', path.join(root, 'box')], r.stdout + r.stderr);
    assert.match(capEff, /^CapEff:\s+0+$/);
    assert.match(nnp, /^NoNewPrivs:\s+1$/);
    assert.match(cg2, /\/cmd-\d+$/);
    assert.ok(rec.cgroup.endsWith(cg2.slice(3).replace(/\/cmd-\d+$/, '')), `${cg2} not under ${rec.cgroup}`);
    const countFile = path.join(root, 'box', 'count');
    const count = () => Number(fs.readFileSync(countFile, 'utf8').trim() || 0);
    await waitFor(() => fs.existsSync(countFile) && count() > 3, { what: 'the counter to count' });

    // Pause: the cgroup is frozen and the counter stands still.
    r = await httpPost(`${base}/v1/sessions/box/pause`, {});
    assert.equal(r.status, 200, r.body);
    assert.equal(json(r).state, 'paused');
    await waitFor(() => cgroupEvents(rec.cgroup).frozen === '1', { what: 'the cgroup to freeze' });
    const frozenAt = count();
    assert.equal(json(await httpGet(`${base}/v1/sessions/box`)).state, 'paused');
    // Resume: the same process counts on from where it stood (its memory was kept).
    r = await httpPost(`${base}/v1/sessions/box/resume`, {});
    assert.equal(r.status, 200, r.body);
    assert.equal(json(r).state, 'active');
    await waitFor(() => count() > frozenAt, { what: 'the counter to go on after resume' });
    assert.ok(count() > frozenAt);
    r = await run(base, 'box', 'kill -0 $(cat counter.pid) && echo same');
    assert.equal(r.stdout, 'same\n');

    // A command on a paused session thaws it first.
    assert.equal((await httpPost(`${base}/v1/sessions/box/pause`, {})).status, 200);
    r = await run(base, 'box', 'echo ran');
    assert.equal(r.stdout, 'ran\n');
    assert.equal(json(await httpGet(`${base}/v1/sessions/box`)).state, 'active');

    // Stop: everything the session ran dies; the next command starts a fresh sandbox.
    r = await httpPost(`${base}/v1/sessions/box/stop`, {});
    assert.equal(r.status, 200, r.body);
    await waitFor(() => processesMatching(`sleep ${tag}`).length === 0, { what: `no 'sleep ${tag}' left` });
    await waitFor(() => cgroupEvents(rec.cgroup).populated === '0', { what: 'the cgroup to empty' });
    assertError(await httpPost(`${base}/v1/sessions/box/pause`, {}), 409, 'session_busy');
    r = await run(base, 'box', 'test -e /tmp/mark && echo kept || echo fresh; kill -0 $(cat counter.pid) 2>/dev/null && echo alive || echo gone');
    assert.equal(r.stdout, 'fresh\ngone\n');

    // The CLI pauses and resumes too.
    r = await yard(['session', 'pause', 'box'], { stateDir: d.stateDir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await yardJson(['session', 'ls', '--json'], { stateDir: d.stateDir }))[0].state, 'paused');
    r = await yard(['session', 'resume', 'box'], { stateDir: d.stateDir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await yardJson(['session', 'ls', '--json'], { stateDir: d.stateDir }))[0].state, 'active');
    await d.stop();
    assert.ok(!fs.existsSync(rec.cgroup) || cgroupEvents(rec.cgroup).populated === '0');
});

test('limits: a fork bomb meets the pids limit and the daemon goes on; memory past the limit is killed', { skip: skipBox }, async (t) => {
    let ctx;
    try {
        ctx = await daemonWithSessions({ extra: '  limits: { pids: 64, memory: 64MiB, cpu: 1.0 }\n' });
    } catch (err) {
        if (/sessions\.limits need the sessions' cgroups/.test(err.message)) {
            t.skip('no pids/memory/cpu controller the daemon can write here');
            return;
        }
        throw err;
    }
    const { base, d } = ctx;
    const rec = await create(base, 'bomb');
    // The bomb's processes stay in the command's cgroup until its timeout kills them all.
    let r = await run(base, 'bomb', 'f(){ f|f& }; f; sleep 60', { timeout_s: 3 });
    assert.match(r.stderr, /fork/i, 'no fork was refused');
    assert.equal(r.timed_out, true);
    assert.equal((await httpGet(`${base}/health`)).status, 200);
    r = await run(base, 'bomb', 'echo still here');
    assert.equal(r.stdout, 'still here\n');
    assert.equal((await httpPost(`${base}/v1/sessions/bomb/stop`, {})).status, 200);
    await waitFor(() => cgroupEvents(rec.cgroup).populated === '0', { what: 'the bomb to be gone' });

    // 100 MB held in one shell's memory, with 64 MiB allowed: the kernel kills it.
    r = await run(base, 'bomb', 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo ${#x}');
    assert.equal(r.stdout, '');
    assert.equal(r.signal, 9, JSON.stringify(r));
    assert.equal((await run(base, 'bomb', 'echo after')).stdout, 'after\n');
    await d.stop();
});

test('idle sessions are stopped or paused, each transition is an event with its reason, metrics count them, capacity evicts the oldest stopped', { skip }, async () => {
    const { base, d, root } = await daemonWithSessions({
        extra: '  max_sessions: 2\n  idle: { after: 1s, action: stop }\n',
    });
    await create(base, 'i1');
    assert.equal((await run(base, 'i1', 'echo x')).stdout, 'x\n');
    // No command for idle.after: stopped, saying why.
    let rec;
    await waitFor(
        async () => (rec = json(await httpGet(`${base}/v1/sessions/i1`))).state === 'stopped',
        { timeoutMs: 20000, what: "i1 stopped for being idle" }
    );
    assert.equal(rec.reason, 'idle for 1 s');
    // yard events has every transition of the session, each with its reason.
    const r = await yard(['events', '--json', '-n', '100', 'session/i1'], { stateDir: d.stateDir });
    assert.equal(r.code, 0, r.stderr);
    const evs = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const steps = evs.map((e) => `${e.from}->${e.to}:${e.reason}`);
    // (a slow machine may idle-stop it once before its command too: stopped->active between)
    assert.deepEqual(steps.slice(0, 2), ['new->creating:opened', 'creating->active:created']);
    assert.equal(steps.at(-1), 'active->stopped:idle for 1 s');

    // Metrics: the pool by state, the commands, the idle stop.
    let m = (await httpGet(`${base}/metrics`)).body;
    assert.match(m, /^yard_sessions\{state="stopped"\} 1$/m);
    assert.match(m, /^yard_session_exec_seconds_count 1$/m);
    assert.match(m, /^yard_session_idle_total\{action="stop"\} [1-9]\d*$/m);

    // Capacity 2: a second session fits; a third evicts the oldest stopped (i1).
    await create(base, 'i2');
    let res = await httpPost(`${base}/v1/sessions`, { id: 'i3' });
    assert.equal(res.status, 201, res.body);
    assertError(await httpGet(`${base}/v1/sessions/i1`), 404, 'session_not_found');
    assert.ok(!fs.existsSync(path.join(root, 'i1')));
    m = (await httpGet(`${base}/metrics`)).body;
    assert.match(m, /^yard_session_evictions_total 1$/m);
    const gone = await yard(['events', '--json', '-n', '100', 'session/i1'], { stateDir: d.stateDir });
    const last = JSON.parse(gone.stdout.trim().split('\n').at(-1));
    assert.equal(last.to, 'removed');
    assert.match(last.reason, /^evicted: sessions.max_sessions \(2\) reached when 'i3' was opened$/);
    await d.stop();
});

test('idle.action pause freezes an idle session; its next command thaws it', { skip: skipBox }, async () => {
    // 3 s: the checks right after the thawing command are well within it
    const { base, d } = await daemonWithSessions({ extra: '  idle: { after: 3s, action: pause }\n' });
    await create(base, 'nap');
    await run(base, 'nap', 'sleep 1000 >/dev/null 2>&1 & echo $! > bg.pid');
    let rec;
    await waitFor(async () => (rec = json(await httpGet(`${base}/v1/sessions/nap`))).state === 'paused', {
        timeoutMs: 20000,
        what: 'nap paused for being idle',
    });
    assert.equal(rec.reason, 'idle for 3 s');
    await waitFor(() => cgroupEvents(rec.cgroup).frozen === '1', { what: 'the cgroup to freeze' });
    const r = await run(base, 'nap', 'kill -0 $(cat bg.pid) && echo kept');
    assert.equal(r.stdout, 'kept\n');
    assert.equal(json(await httpGet(`${base}/v1/sessions/nap`)).state, 'active');
    assert.match((await httpGet(`${base}/metrics`)).body, /^yard_session_idle_total\{action="pause"\} 1$/m);
    await d.stop();
});
