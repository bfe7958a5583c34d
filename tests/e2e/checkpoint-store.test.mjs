// tools.checkpoint_store: CRIU images (the stand-in's, tools/standins/criu, plus a
// 24 MiB pages image a wrapper adds so that it goes up in parts) uploaded to a real
// S3-compatible server that checks SigV4 signatures (npm @20minutes/s3rver, in this
// process), after each dump, by the daemon's `yard checkpoint-store` child. Covered:
// the generations and their pruning, a wrong secret key (one line naming S3's code,
// the local images kept and restored from), an upload cut mid-way (the connection
// dropped during a part) and resumed without sending again what had arrived, and a
// wake whose local images were lost: downloaded, checked against the manifest (a
// corrupted object refuses the restore in one line), restored with the same pid.
import { test, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import S3rver from '@20minutes/s3rver';
import { assert, tmpdir, freePort, startDaemon, yard, waitFor, waitState, writeConfig } from './lib/harness.mjs';
import { standinDaemon, entry, CRIU } from './lib/standins.mjs';
import { events } from './lib/router-helpers.mjs';

const KEY = 'S3RVER'; // the server's built-in account
const servers = [];
after(async () => {
    for (const s of servers) {
        // No new connections, and none left open by a child that is still uploading.
        const closed = s.close().catch(() => {});
        s.httpServer?.closeAllConnections();
        await closed;
    }
});

/**
 * A store on a free port with bucket 'yard'. faults.dropPart: the connection of
 * the next PUT of that part number is dropped (once); stallPart() holds one (see
 * there). puts counts the PUTs of each key (parts included, by key).
 */
async function startStore(dir) {
    const port = await freePort();
    const faults = { dropPart: 0, stall: null };
    const puts = new Map();
    const s = new S3rver({
        port,
        address: '127.0.0.1',
        silent: true,
        directory: path.join(dir, 's3'),
        configureBuckets: [{ name: 'yard' }],
    });
    s.middleware.unshift(async (ctx, next) => {
        if (ctx.method === 'PUT') {
            puts.set(ctx.path, (puts.get(ctx.path) || 0) + 1);
            if (faults.dropPart && ctx.query.partNumber === String(faults.dropPart)) {
                faults.dropPart = 0;
                ctx.req.socket.destroy();
                return;
            }
            const st = faults.stall;
            if (st && ctx.query.partNumber === String(st.part)) {
                faults.stall = null;
                ctx.req.socket.on('close', st.closed);
                ctx.req.resume(); // the body read and dropped: the uploader's end is seen
                st.reached();
                await st.go;
                ctx.req.socket.destroy();
                return;
            }
        }
        await next();
    });
    await s.run();
    // A test that fails skips the after hooks that follow the harness's: the
    // server must not keep this process alive then.
    s.httpServer.unref();
    servers.push(s);
    return { url: `http://127.0.0.1:${port}`, s, faults, puts, data: path.join(dir, 's3', 'yard') };
}

/**
 * Holds the next PUT of part `part` until release() (then drops its connection):
 * reached() waits until it arrived, closed() until the uploader closed it.
 */
function stallPart(store, part) {
    const st = { part, hit: false, gone: false };
    st.reached = () => (st.hit = true);
    st.closed = () => (st.gone = true);
    st.go = new Promise((r) => (st.release = r));
    store.faults.stall = st;
    return {
        reached: () => waitFor(() => st.hit, { timeoutMs: 20000, what: `part ${part} held` }),
        closed: () => waitFor(() => st.gone, { timeoutMs: 10000, what: `the upload of part ${part} closed` }),
        release: () => st.release(),
    };
}

/** The generations of model in the store's files, and whether each has its manifest. */
function generations(store, model) {
    const d = path.join(store.data, 'ckpt', model);
    if (!fs.existsSync(d)) return [];
    return fs
        .readdirSync(d)
        .sort()
        .map((g) => ({
            name: g,
            complete: fs.existsSync(path.join(d, g, 'manifest.json._S3rver_object')),
        }));
}

/** A criu that, after a dump, adds pages-1.img of 24 MiB (over 4 parts of 5 MiB). */
function bigCriu(dir) {
    const file = path.join(dir, 'criu-big');
    fs.writeFileSync(
        file,
        `#!/bin/sh\n'${CRIU}' "$@" || exit\n` +
            `if [ "$1" = dump ]; then for a in "$@"; do [ "$prev" = --images-dir ] && ` +
            `head -c 25165824 /dev/urandom > "$a/pages-1.img"; prev=$a; done; fi\nexit 0\n`,
        { mode: 0o755 }
    );
    return file;
}

const storeTools = (store, keep = 2) =>
    `, checkpoint_store: { url: "${store.url}", bucket: yard, prefix: ckpt/, keep: ${keep}, part_size: 5MiB }`;
const creds = (secret = KEY) => ({
    AWS_ACCESS_KEY_ID: KEY,
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_SESSION_TOKEN: '',
    AWS_REGION: '',
});
/** The reasons of model's events that speak of the store. */
const storeEvents = async (dir, model) =>
    (await events(dir, { model })).map((e) => e.reason || '').filter((r) => r.startsWith('checkpoint store:'));
const waitEvent = (dir, model, re, what) =>
    waitFor(async () => (await storeEvents(dir, model)).find((r) => re.test(r)), { timeoutMs: 20000, what });
const imagesDir = (dir, model) => path.join(dir, 'checkpoints', model);

test('each dump is uploaded as a generation; the store keeps the newest `keep`', async () => {
    const dir = tmpdir();
    const store = await startStore(dir);
    const { d, ask } = await standinDaemon(['c'], {
        evict: 'checkpoint',
        dir,
        tools: storeTools(store, 1),
        env: creds(),
    });
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    const pid = (await entry(dir, 'c')).pid;
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    await waitEvent(dir, 'c', /uploaded the images of 'c', generation \d{8}T\d{6}\.\d{3}Z: \d+ files/, 'the first upload');
    const first = generations(store, 'c');
    assert.deepEqual(first.map((g) => g.complete), [true]);
    assert.ok(fs.existsSync(path.join(imagesDir(dir, 'c'), 'inventory.img')), 'the local images went');

    assert.equal((await ask('c')).status, 200);
    assert.equal((await entry(dir, 'c')).pid, pid);
    await waitFor(() => !fs.existsSync(imagesDir(dir, 'c')), { what: 'the local images removed after the restore' });
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    await waitFor(async () => (await storeEvents(dir, 'c')).filter((r) => /uploaded/.test(r)).length === 2, {
        timeoutMs: 20000,
        what: 'the second upload',
    });
    const second = generations(store, 'c');
    assert.equal(second.length, 1, `keep: 1 left ${JSON.stringify(second)}`);
    assert.ok(second[0].complete && second[0].name > first[0].name, 'the newer generation is the one kept');

    // The local images are lost and the stored pages are not what the manifest
    // says: the restore is refused in one line, nothing is left half-downloaded,
    // and the model stops (a failed wake always does; the next request starts it).
    fs.rmSync(imagesDir(dir, 'c'), { recursive: true });
    const obj = path.join(store.data, 'ckpt', 'c', second[0].name, 'pstree.img._S3rver_object');
    const bad = fs.readFileSync(obj);
    bad[0] ^= 0xff;
    fs.writeFileSync(obj, bad);
    const w = await yard(['wake', 'c'], { stateDir: dir });
    assert.notEqual(w.code, 0);
    assert.match(w.stderr, /'pstree\.img' came as \d+ bytes with sha256 \w+\.\.\., the manifest says .*; not restoring from them/);
    const e = await waitState(dir, 'c', 'stopped', 10000);
    assert.match(e.reason, /restore failed: checkpoint store: the images of 'c' \(generation \S+\) fail their check/);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'checkpoints')), [], 'a refused download left files');
    await d.stop();
});

test('a wrong secret key: one line with S3 own code, the local images kept and restored from', async () => {
    const dir = tmpdir();
    const store = await startStore(dir);
    const { d, ask } = await standinDaemon(['c'], {
        evict: 'checkpoint',
        dir,
        tools: storeTools(store),
        env: creds('not-the-key'),
    });
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    const pid = (await entry(dir, 'c')).pid;
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    // The first start looked for a checkpoint in the store first: refused the same way.
    const why = await waitEvent(dir, 'c', /upload of 'c' refused/, 'the refusal');
    assert.match(
        why,
        /^checkpoint store: upload of 'c' refused \(403 SignatureDoesNotMatch: The request signature .*\); check AWS_SECRET_ACCESS_KEY$/
    );
    assert.equal(generations(store, 'c').length, 0);
    assert.ok(fs.existsSync(path.join(imagesDir(dir, 'c'), 'inventory.img')), 'a store failure removed the images');
    assert.equal((await entry(dir, 'c')).state, 'checkpointed');
    assert.equal((await ask('c')).status, 200);
    assert.equal((await entry(dir, 'c')).pid, pid, 'not restored from the local images');
    await d.stop();
});

test('an upload cut mid-part resumes; after a wiped disk a wake restores from the store', async () => {
    const dir = tmpdir();
    const store = await startStore(dir);
    const opts = { evict: 'checkpoint', criu: bigCriu(dir), tools: storeTools(store), env: creds() };
    const first = await standinDaemon(['c'], { ...opts, dir, args: ['--keep-engines'] });
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    const pid = (await entry(dir, 'c')).pid;

    store.faults.dropPart = 2;
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    const cut = await waitEvent(dir, 'c', /upload of 'c' failed/, 'the cut upload');
    assert.match(cut, /no answer from http:\/\/127\.0\.0\.1:\d+ \(.+\)/);
    await waitEvent(dir, 'c', /uploaded the images of 'c'/, 'the resumed upload');
    const gens = generations(store, 'c');
    assert.deepEqual(gens.map((g) => g.complete), [true], 'the retry made a generation of its own');
    const key = (f) => `/yard/ckpt/c/${gens[0].name}/${f}`;
    assert.equal(store.puts.get(key('inventory.img')), 1, 'a file that had arrived was sent again');
    assert.ok(store.puts.get(key('pages-1.img')) >= 5 + 2, 'the pages image did not go up in parts');
    assert.equal(store.puts.get(key('manifest.json')), 1);
    await first.d.stop();

    // The disk is wiped: the images are gone here, the record says checkpointed.
    fs.rmSync(path.join(dir, 'checkpoints'), { recursive: true });
    const second = await startDaemon({
        config: first.config,
        stateDir: dir,
        env: { YARD_STANDIN_STATE: path.join(dir, 'standin'), ...creds() },
    });
    const adopted = await entry(dir, 'c');
    assert.equal(adopted.state, 'checkpointed');
    assert.match(adopted.reason, /in the checkpoint store/);

    const w2 = await yard(['wake', 'c'], { stateDir: dir });
    assert.equal(w2.code, 0, w2.stderr);
    const back = await entry(dir, 'c');
    assert.equal(back.state, 'ready');
    assert.equal(back.pid, pid, 'cold-started instead of restored');
    assert.ok(
        (await storeEvents(dir, 'c')).some((r) => /downloaded the images of 'c', generation .*: \d+ files, 2\d\.\d MiB/.test(r))
    );
    await second.stop();
});

test('a new state directory restores the store checkpoint of the same launch; another launch starts cold', async () => {
    const dir = tmpdir();
    const store = await startStore(dir);
    const first = await standinDaemon(['c'], {
        evict: 'checkpoint',
        dir,
        tools: storeTools(store),
        env: creds(),
        args: ['--keep-engines'],
    });
    // Nothing in the store yet: the first start says so and starts cold.
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    await waitEvent(dir, 'c', /no complete checkpoint of 'c' under 'ckpt\/c\/' in bucket 'yard'/, 'the empty store');
    const pid = (await entry(dir, 'c')).pid;
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    await waitEvent(dir, 'c', /uploaded the images of 'c'/, 'the upload');
    await first.d.stop(); // the checkpointed engine stays (--keep-engines): the stand-in stops, not ends, it
    const env = { YARD_STANDIN_STATE: path.join(dir, 'standin'), ...creds() };

    // Another command line: the store's checkpoint is not this launch's; a cold start, saying why.
    const other = tmpdir();
    const otherConfig = writeConfig(
        other,
        fs.readFileSync(first.config, 'utf8').replace('--load-time 200ms', '--load-time 150ms')
    );
    const d3 = await startDaemon({ config: otherConfig, stateDir: other, env });
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: other })).code, 0);
    const cold = await entry(other, 'c');
    assert.notEqual(cold.pid, pid, 'restored although the command differs');
    const why = (await events(other, { model: 'c' })).map((e) => e.reason || '');
    assert.ok(
        why.some((r) =>
            /^starting cold: checkpoint store: the newest checkpoint of 'c' \(generation \S+\) was taken of another launch of it \(its command, environment, directory or GPUs differ from the config's now\); not restoring from it$/.test(
                r
            )
        ),
        JSON.stringify(why)
    );
    assert.ok(!fs.existsSync(path.join(other, 'checkpoints', 'c')), 'a refused checkpoint left files');
    await d3.stop();

    // The same config, a new state directory (no yard.db, no checkpoints): the first
    // request is answered by the engine the store's images restore, not a new one.
    const fresh = tmpdir();
    const d2 = await startDaemon({ config: first.config, stateDir: fresh, env, args: ['--keep-engines'] });
    assert.equal((await entry(fresh, 'c')).state, 'stopped');
    const r = await first.ask('c');
    assert.equal(r.status, 200, r.body);
    const back = await entry(fresh, 'c');
    assert.equal(back.state, 'ready');
    assert.equal(back.pid, pid, 'cold-started instead of restored');
    assert.equal(back.reason, 'restored from a CRIU checkpoint');
    assert.ok((await storeEvents(fresh, 'c')).some((e) => /downloaded the images of 'c', generation /.test(e)));

    // The restored engine keeps the key it was started with (another state dir's
    // secret): a daemon restarted over it still reaches it.
    await d2.stop();
    const d4 = await startDaemon({ config: first.config, stateDir: fresh, env });
    const again = await first.ask('c');
    assert.equal(again.status, 200, again.body);
    assert.equal((await entry(fresh, 'c')).pid, pid);
    await d4.stop(); // the engine ends with it

    // The stored images restore nothing now (their processes are gone): the start
    // goes on cold at once, the failed restore its reason.
    const last = tmpdir();
    const d5 = await startDaemon({ config: first.config, stateDir: last, env });
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: last })).code, 0);
    const c5 = await waitState(last, 'c', 'ready', 20000);
    assert.notEqual(c5.pid, pid);
    const reasons = (await events(last, { model: 'c' })).map((e) => e.reason || '');
    assert.ok(
        reasons.some((r) => /^starting cold: restore failed: .*criu.*restore/.test(r)),
        JSON.stringify(reasons)
    );
    await d5.stop();
});

test('an upload cut by a stop of the daemon (SIGTERM, then kill -9) is resumed by the next daemon', async () => {
    const dir = tmpdir();
    const store = await startStore(dir);
    const opts = { evict: 'checkpoint', criu: bigCriu(dir), tools: storeTools(store), env: creds() };
    const first = await standinDaemon(['c'], { ...opts, dir, args: ['--keep-engines'] });
    const env = { YARD_STANDIN_STATE: path.join(dir, 'standin'), ...creds() };
    const restart = (args) => startDaemon({ config: first.config, stateDir: dir, env, args });
    const note = path.join(imagesDir(dir, 'c'), 'yard-upload');
    const key = (g, f) => `/yard/ckpt/c/${g}/${f}`;
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    const pid = (await entry(dir, 'c')).pid;

    // SIGTERM while a part of the pages is held: the daemon ends its upload child.
    let stall = stallPart(store, 2);
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    await stall.reached();
    await first.d.stop();
    await stall.closed();
    stall.release();
    const [g1] = generations(store, 'c');
    assert.equal(g1.complete, false, 'the cut generation has its manifest');
    assert.equal(fs.readFileSync(note, 'utf8'), `${g1.name}\n`);

    const second = await restart(['--keep-engines']);
    const up1 = await waitEvent(dir, 'c', /uploaded the images of 'c'/, 'the resumed upload');
    assert.match(up1, new RegExp(`generation ${g1.name.replace('.', '\\.')}: \\d+ files, .* \\([1-9]\\d* already there\\)`));
    assert.match(second.logText(), /the upload of the images of 'c' \(generation \S+\) did not end under the last daemon; resuming it/);
    assert.deepEqual(generations(store, 'c'), [{ name: g1.name, complete: true }]);
    assert.equal(store.puts.get(key(g1.name, 'inventory.img')), 1, 'a file that had arrived was sent again');
    assert.ok(!fs.existsSync(note), 'the note of a finished upload stayed');

    // kill -9 during the next upload: its child ends with the daemon, the next one resumes it.
    assert.equal((await first.ask('c')).status, 200);
    assert.equal((await entry(dir, 'c')).pid, pid);
    stall = stallPart(store, 2);
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    await stall.reached();
    second.kill('SIGKILL');
    await second.waitExit();
    await stall.closed(); // the child did not outlive the daemon
    stall.release();
    const g2 = generations(store, 'c').find((g) => g.name !== g1.name);
    assert.equal(g2.complete, false);

    const third = await restart([]);
    await waitFor(async () => (await storeEvents(dir, 'c')).filter((r) => /uploaded/.test(r)).length === 2, {
        timeoutMs: 20000,
        what: 'the upload resumed after kill -9',
    });
    assert.deepEqual(generations(store, 'c'), [
        { name: g1.name, complete: true },
        { name: g2.name, complete: true },
    ]);
    assert.equal(store.puts.get(key(g2.name, 'inventory.img')), 1, 'a file that had arrived was sent again');
    await third.stop();
});
