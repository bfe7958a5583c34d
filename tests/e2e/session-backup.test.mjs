// Session backups and restores with real bubblewrap and libarchive: POST .../backup and
// `yard session backup` write <backup_dir>/<id>-<UTC>.tar.zst, read back
// with tar and compared file by file with the volume (contents, modes,
// symlinks stored as links, one pointing out of the volume not followed);
// no temporary file is left; metrics and an event count it; the automatic
// backup once a session stopped for backup_after; capacity eviction backs
// the oldest stopped session up before its volume goes; backups off: 501.
// Prune after prune_after (the session kept as pruned), restored when
// opened again. Restore: refused while active, then the volume replaced by the latest
// backup and equal to it; a hostile archive (absolute names, '..', hard
// links out, a write through a symlink) refused whole, nothing written out.
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
    sandboxSkip,
} from './lib/harness.mjs';

after(cleanup);

const skip =
    sandboxSkip() ||
    (spawnSync('tar', ['--zstd', '--version']).status !== 0
        ? 'needs tar with zstd to read the backups back'
        : false);

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
    return { dir, root, backups, d, config, base: `http://127.0.0.1:${port}` };
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

    // Restore: refused while active; once stopped, the volume changed since is
    // replaced by the latest backup, equal to the volume when it was made.
    await run(base, 'b1', 'rm -r a.txt d && echo changed > new && chmod 600 empty');
    let rr = await httpPost(`${base}/v1/sessions/b1/restore`, {});
    assert.equal(rr.status, 409, rr.body);
    assert.match(json(rr).error.message, /stop it first/);
    assert.equal((await httpPost(`${base}/v1/sessions/b1/stop`, {})).status, 200);
    await waitFor(async () => (rr = await httpPost(`${base}/v1/sessions/b1/restore`, {})).status !== 409, {
        timeoutMs: 20000,
        what: 'b1 stopped for good (its sandbox gone) and restored',
    });
    assert.equal(rr.status, 200, rr.body);
    const latest = backupsOf(backups, 'b1').sort().at(-1);
    assert.equal(path.basename(json(rr).restored_from.path), latest);
    assert.deepEqual(tree(path.join(root, 'b1')), want);
    assert.equal((await run(base, 'b1', 'cat a.txt')).stdout, 'hello\n');
    assert.deepEqual(fs.readdirSync(root).filter((n) => n.startsWith('.')), []);
    assert.equal((await httpPost(`${base}/v1/sessions/b1/stop`, {})).status, 200);
    await waitFor(
        async () => {
            const c = await yard(['session', 'restore', 'b1'], { stateDir: d.stateDir });
            if (c.code !== 0) return false;
            assert.match(c.stdout, /^restored session 'b1' from \S+\/b1-\S+\.tar\.zst \([\d.]+ s\)\n$/);
            return true;
        },
        { timeoutMs: 20000, what: 'yard session restore b1' }
    );
    const evr = await yard(['events', '--json', '-n', '100', 'session/b1'], { stateDir: d.stateDir });
    assert.ok(evr.stdout.trim().split('\n').map((l) => JSON.parse(l)).some((e) => e.to === 'restored' && /^restored from b1-/.test(e.reason)), evr.stdout);

    // an unknown session; a session without a backup
    assert.equal((await httpPost(`${base}/v1/sessions/nope/backup`, {})).status, 404);
    await create(base, 'nob');
    assert.equal((await httpPost(`${base}/v1/sessions/nob/stop`, {})).status, 200);
    await waitFor(async () => (rr = await httpPost(`${base}/v1/sessions/nob/restore`, {})).status !== 409, {
        timeoutMs: 20000,
        what: 'nob restore answered',
    });
    assert.equal(rr.status, 404, rr.body);
    assert.equal(json(rr).error.code, 'no_backup');
    const bad = await yard(['session', 'backup'], { stateDir: d.stateDir });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /name one session/);
    await d.stop();
});

// A tar.zst of entries made by hand (python's tarfile, then zstd).
function hostileArchive(file, entries) {
    const py = `
import io, sys, tarfile, json
t = tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT)
for e in json.loads(sys.argv[2]):
    i = tarfile.TarInfo(e['name'])
    if e.get('link'):
        i.type = tarfile.SYMTYPE if e['type'] == 'sym' else tarfile.LNKTYPE
        i.linkname = e['link']
        t.addfile(i)
    elif e.get('dir'):
        i.type = tarfile.DIRTYPE
        i.mode = 0o755
        t.addfile(i)
    else:
        data = e.get('data', 'x').encode()
        i.size = len(data)
        t.addfile(i, io.BytesIO(data))
t.close()
`;
    const tarFile = `${file}.tar`;
    let r = spawnSync('python3', ['-c', py, tarFile, JSON.stringify(entries)], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    r = spawnSync('zstd', ['-q', '-f', '--rm', tarFile, '-o', file], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
}

test('a hostile backup is refused whole: absolute names, .., a hard link out, writing through a symlink', { skip }, async () => {
    const { base, d, root, backups, dir } = await daemonWith('  backup_after: 1h\n  backup_dir: BACKUPS\n');
    const outside = path.join(dir, 'outside');
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, 'secret'), 'secret\n');
    await create(base, 'h1');
    await run(base, 'h1', 'echo mine > keep');
    assert.equal((await httpPost(`${base}/v1/sessions/h1/stop`, {})).status, 200);
    fs.mkdirSync(backups, { recursive: true });
    const cases = [
        [{ name: './ok', data: 'fine' }, { name: `${outside}/abs`, data: 'pwned' }],
        [{ name: './ok', data: 'fine' }, { name: '../../outside/dotdot', data: 'pwned' }],
        [{ name: './a/../../outside/mid', data: 'pwned' }],
        [{ name: './hl', type: 'hard', link: `${outside}/secret` }],
        [{ name: './hl2', type: 'hard', link: '../outside/secret' }],
        [{ name: './lnk', type: 'sym', link: outside }, { name: './lnk/through', data: 'pwned' }],
    ];
    let n = 0;
    for (const entries of cases) {
        // each the latest backup of h1, by its name
        const file = path.join(backups, `h1-2099123${n}T235959.999Z.tar.zst`);
        n++;
        hostileArchive(file, entries);
        let r;
        await waitFor(async () => (r = await httpPost(`${base}/v1/sessions/h1/restore`, {})).status !== 409, {
            timeoutMs: 20000,
            what: 'h1 restore answered',
        });
        assert.equal(r.status, 422, `${JSON.stringify(entries)}: ${r.body}`);
        assert.equal(json(r).error.code, 'backup_refused');
        assert.ok(json(r).error.message.length < 600);
        // nothing written outside, the volume as it was, nothing left beside it
        assert.deepEqual(fs.readdirSync(outside), ['secret']);
        assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'secret\n');
        assert.deepEqual(fs.readdirSync(path.join(root, 'h1')), ['keep']);
        assert.deepEqual(fs.readdirSync(root).filter((x) => x.startsWith('.')), []);
    }
    // a sound one by hand restores (so the refusals above are not a broken restore)
    hostileArchive(path.join(backups, 'h1-20991239T235959.999Z.tar.zst'), [
        { name: './d', dir: true },
        { name: './d/f', data: 'restored' },
        { name: './lnk', type: 'sym', link: outside },
    ]);
    const r = await httpPost(`${base}/v1/sessions/h1/restore`, {});
    assert.equal(r.status, 200, r.body);
    assert.equal(fs.readFileSync(path.join(root, 'h1', 'd', 'f'), 'utf8'), 'restored');
    assert.equal(fs.readlinkSync(path.join(root, 'h1', 'lnk')), outside);
    await d.stop();
});

test('pruned after prune_after once backed up; used again, restored from its latest backup', { skip }, async () => {
    const { base, d, root, backups } = await daemonWith(
        '  idle: { after: 1s, action: stop }\n  backup_after: 1s\n  backup_dir: BACKUPS\n  prune_after: 2s\n'
    );
    await create(base, 'p1');
    await run(base, 'p1', "printf 'keep me' > f && chmod 604 f && ln -s f lnk");
    const want = tree(path.join(root, 'p1'));
    let rec;
    await waitFor(async () => (rec = json(await httpGet(`${base}/v1/sessions/p1`))).state === 'pruned', {
        timeoutMs: 40000,
        what: 'p1 idle-stopped, backed up, then pruned',
    });
    assert.equal(rec.reason, 'pruned: stopped for 2 s');
    assert.ok(!fs.existsSync(path.join(root, 'p1')), 'the volume is deleted');
    assert.equal(backupsOf(backups, 'p1').length, 1);
    assert.equal(json(await httpGet(`${base}/v1/sessions`)).data.find((x) => x.id === 'p1').state, 'pruned');
    // a command for it says how to get it back
    let r = await httpPost(`${base}/v1/sessions/p1/exec`, { cmd: 'true', stream: false });
    assert.equal(r.status, 409, r.body);
    assert.match(json(r).error.message, /was pruned.*open it again/);
    // opened again: restored, the same files
    r = await httpPost(`${base}/v1/sessions`, { id: 'p1' });
    assert.equal(r.status, 200, r.body);
    assert.match(json(r).reason, /^restored from p1-\S+\.tar\.zst \([\d.]+ s\) when opened again$/);
    assert.deepEqual(tree(path.join(root, 'p1')), want);
    assert.equal((await run(base, 'p1', 'cat f')).stdout, 'keep me');
    const ev = await yard(['events', '--json', '-n', '100', 'session/p1'], { stateDir: d.stateDir });
    const steps = ev.stdout.trim().split('\n').map((l) => JSON.parse(l)).map((e) => e.to);
    assert.ok(steps.includes('backed-up') && steps.includes('pruned'), steps.join(','));
    await d.stop();
});

test('a session backed up before a daemon restart is not backed up again after it', { skip }, async () => {
    const { base, d, backups, config } = await daemonWith(
        '  idle: { after: 1s, action: stop }\n  backup_after: 1s\n  backup_dir: BACKUPS\n  prune_after: 8s\n'
    );
    await create(base, 'r1');
    await run(base, 'r1', 'echo once > f');
    await waitFor(() => backupsOf(backups, 'r1').length === 1, {
        timeoutMs: 30000,
        what: 'r1 idle-stopped and backed up',
    });
    const before = await yard(['events', '--json', '-n', '100', 'session/r1'], { stateDir: d.stateDir });
    const lastId = Math.max(...before.stdout.trim().split('\n').map((l) => JSON.parse(l).id));
    await d.stop();
    const d2 = await startDaemon({ config, stateDir: d.stateDir });
    // Pruning needs a backup of the volume as it is: the one from before the restart counts.
    await waitFor(async () => json(await httpGet(`${base}/v1/sessions/r1`)).state === 'pruned', {
        timeoutMs: 40000,
        what: 'r1 pruned after the restart',
    });
    assert.equal(backupsOf(backups, 'r1').length, 1, 'backed up again after the restart');
    const after = await yard(['events', '--json', '-n', '100', 'session/r1'], { stateDir: d.stateDir });
    const since = after.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.id > lastId);
    assert.ok(!since.some((e) => e.to === 'backed-up'), since.map((e) => e.to).join(','));
    await d2.stop();
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
