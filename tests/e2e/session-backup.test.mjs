// Session backups with real bubblewrap and libarchive: POST .../backup and
// `yard session backup` write <backup_dir>/<id>-<UTC>.tar.zst, read back
// with tar and compared file by file with the volume (contents, modes,
// symlinks stored as links, one pointing out of the volume not followed);
// no temporary file is left; metrics and an event count it; the automatic
// backup once a session stopped for backup_after; capacity eviction backs
// the oldest stopped session up before its volume goes; backups off: 501.
import { test, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
    assert,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    waitFor,
    freePort,
    httpGet,
    httpPost,
    cleanup,
} from './lib/harness.mjs';

after(cleanup);

function bwrapWorks() {
    const r = spawnSync('bwrap', ['--ro-bind', '/', '/', '--unshare-pid', '--unshare-net', 'true'], {
        uid: 65534,
        gid: 65534,
    });
    return r.status === 0;
}
const skip =
    process.getuid() !== 0
        ? 'runs as root, so that commands can run as nobody'
        : !bwrapWorks()
          ? 'bwrap cannot make its namespaces here (no user namespaces?)'
          : spawnSync('tar', ['--zstd', '--version']).status !== 0
            ? 'needs tar with zstd to read the backups back'
            : false;

async function daemonWith(extra) {
    const dir = tmpdir();
    fs.chmodSync(dir, 0o755);
    const root = path.join(dir, 'vols');
    const backups = path.join(dir, 'backups');
    const port = await freePort();
    const yaml =
        `listen: 127.0.0.1:${port}\nmodels: {}\n` +
        `sessions:\n  root: ${root}\n  user: nobody\n${extra.replaceAll('BACKUPS', backups)}`;
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({ config, stateDir: dir });
    return { dir, root, backups, d, base: `http://127.0.0.1:${port}` };
}

const json = (r) => JSON.parse(r.body);

async function create(base, id) {
    const r = await httpPost(`${base}/v1/sessions`, { id });
    assert.ok(r.status === 200 || r.status === 201, `create ${id}: ${r.status} ${r.body}`);
}

async function run(base, id, cmd) {
    const r = await httpPost(`${base}/v1/sessions/${id}/exec`, { cmd, stream: false });
    assert.equal(r.status, 200, r.body);
    const o = json(r);
    assert.equal(o.code, 0, r.body);
    return o;
}

// Every entry beneath dir: relative name -> {type, mode, data | target}.
function tree(dir) {
    const out = {};
    const walk = (rel) => {
        for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
            const r = rel ? `${rel}/${name}` : name;
            const p = path.join(dir, r);
            const st = fs.lstatSync(p);
            const mode = st.mode & 0o7777;
            if (st.isSymbolicLink()) out[r] = { type: 'link', target: fs.readlinkSync(p) };
            else if (st.isDirectory()) {
                out[r] = { type: 'dir', mode };
                walk(r);
            } else out[r] = { type: 'file', mode, data: fs.readFileSync(p).toString('base64') };
        }
    };
    walk('');
    return out;
}

function backupsOf(dir, id) {
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.startsWith(`${id}-`)) : [];
}

test('a backup read back equals the volume file by file; yard session backup; metrics and an event', { skip }, async () => {
    const { base, d, root, backups, dir } = await daemonWith('  backup_after: 1h\n  backup_dir: BACKUPS\n');
    await create(base, 'b1');
    await run(
        base,
        'b1',
        "mkdir -p d/e && printf 'hello\\n' > a.txt && chmod 640 a.txt && head -c 200000 /dev/urandom > d/e/blob && " +
            "printf '#!/bin/sh\\n' > d/run && chmod 755 d/run && chmod 700 d/e && : > empty && " +
            'ln -s a.txt rel && ln -s /etc/passwd out && ln -s ../../nowhere dangling'
    );
    const r = await httpPost(`${base}/v1/sessions/b1/backup`, {});
    assert.equal(r.status, 200, r.body);
    const b = json(r).backup;
    assert.equal(path.dirname(b.path), backups);
    assert.match(path.basename(b.path), /^b1-\d{8}T\d{6}\.\d{3}Z\.tar\.zst$/);
    assert.equal(fs.statSync(b.path).size, b.bytes);
    // only complete archives: nothing temporary left beside it
    assert.deepEqual(fs.readdirSync(backups), [path.basename(b.path)]);

    const x = path.join(dir, 'x');
    fs.mkdirSync(x);
    const t = spawnSync('tar', ['--zstd', '-xpf', b.path, '-C', x], { encoding: 'utf8' });
    assert.equal(t.status, 0, t.stderr);
    const want = tree(path.join(root, 'b1'));
    assert.deepEqual(tree(x), want);
    assert.deepEqual(want['out'], { type: 'link', target: '/etc/passwd' });
    assert.equal(want['a.txt'].mode, 0o640);
    assert.equal(want['d/e'].mode, 0o700);
    // entries are relative to the volume
    const names = spawnSync('tar', ['--zstd', '-tf', b.path], { encoding: 'utf8' }).stdout.split('\n');
    assert.ok(names.every((n) => n === '' || n === './' || n.startsWith('./')), names.join(','));

    // the CLI, a second backup beside the first
    const c = await yard(['session', 'backup', 'b1'], { stateDir: d.stateDir });
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /^backed up session 'b1' to \S+\/b1-\S+\.tar\.zst \(\d+ bytes in [\d.]+ s\)\n$/);
    assert.equal(backupsOf(backups, 'b1').length, 2);

    const m = (await httpGet(`${base}/metrics`)).body;
    assert.match(m, /^yard_session_backup_seconds_count 2$/m);
    assert.match(m, /^yard_session_backup_bytes_total [1-9]\d*$/m);
    assert.match(m, /^yard_session_backup_failures_total 0$/m);
    const ev = await yard(['events', '--json', '-n', '100', 'session/b1'], { stateDir: d.stateDir });
    const evs = ev.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const bk = evs.filter((e) => e.to === 'backed-up');
    assert.equal(bk.length, 2, ev.stdout);
    assert.match(bk[0].reason, /^backed up to b1-\S+\.tar\.zst \(\d+ bytes in [\d.]+ s\)$/);

    // an unknown session, and a session that cannot be restored yet
    assert.equal((await httpPost(`${base}/v1/sessions/nope/backup`, {})).status, 404);
    const bad = await yard(['session', 'backup'], { stateDir: d.stateDir });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /name one session/);
    await d.stop();
});

test('backed up once stopped for backup_after; eviction at capacity backs up first; backups off: 501', { skip }, async () => {
    const { base, d, root, backups } = await daemonWith(
        '  max_sessions: 2\n  idle: { after: 1s, action: stop }\n  backup_after: 2s\n  backup_dir: BACKUPS\n  prune_after: 1h\n'
    );
    await create(base, 'a1');
    await run(base, 'a1', 'echo kept > f');
    // idle stop, then the automatic backup
    await waitFor(() => backupsOf(backups, 'a1').length === 1, { timeoutMs: 30000, what: 'a1 backed up' });
    assert.equal(json(await httpGet(`${base}/v1/sessions/a1`)).state, 'stopped');

    // Capacity 2: e2 fits; e3 evicts a1, already backed up, at once.
    await create(base, 'e2');
    let res = await httpPost(`${base}/v1/sessions`, { id: 'e3' });
    assert.equal(res.status, 201, res.body);
    assert.equal((await httpGet(`${base}/v1/sessions/a1`)).status, 404);
    assert.equal(backupsOf(backups, 'a1').length, 1);

    // e2 stopped by hand, not backed up yet (e3 may have stopped for being
    // idle too): e4 waits until the oldest stopped one is backed up and evicted
    res = await httpPost(`${base}/v1/sessions/e2/stop`, {});
    assert.equal(res.status, 200, res.body);
    let first = null;
    await waitFor(
        async () => {
            const r = await httpPost(`${base}/v1/sessions`, { id: 'e4' });
            first ??= r;
            return r.status === 201;
        },
        { timeoutMs: 30000, what: 'e4 created once a stopped session was backed up and evicted' }
    );
    if (first.status !== 201) {
        assert.equal(first.status, 503, first.body);
        assert.match(json(first).error.message, /backing up the oldest stopped session '(e2|e3)' before it is evicted/);
    }
    const gone = [];
    for (const id of ['e2', 'e3']) if ((await httpGet(`${base}/v1/sessions/${id}`)).status === 404) gone.push(id);
    assert.equal(gone.length, 1, `one of e2, e3 evicted: ${gone}`);
    assert.equal(backupsOf(backups, gone[0]).length, 1);
    assert.ok(!fs.existsSync(path.join(root, gone[0])));
    const m = (await httpGet(`${base}/metrics`)).body;
    assert.match(m, /^yard_session_evictions_total 2$/m);
    await d.stop();

    const off = await daemonWith('');
    await create(off.base, 'n1');
    const r = await httpPost(`${off.base}/v1/sessions/n1/backup`, {});
    assert.equal(r.status, 501, r.body);
    assert.equal(json(r).error.code, 'backups_off');
    await off.d.stop();
});
