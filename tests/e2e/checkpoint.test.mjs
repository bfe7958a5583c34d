// The checkpoint eviction (cuda-checkpoint, then CRIU) through the stand-ins in
// tools/standins/: the CUDA state is suspended (ledger memory freed), `criu dump`
// writes STATE_DIR/checkpoints/NAME and takes the tree off the CPU (the stand-in
// stops it; real CRIU ends it), a request restores it with its pid, toggles the
// CUDA state back and warms it up. A restore that fails stops the instance; a
// daemon restarted while a model is checkpointed adopts it as checkpointed.
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { assert, tmpdir, startDaemon, yard, pidAlive, waitState } from './lib/harness.mjs';
import { standinDaemon, entry, usedBy } from './lib/standins.mjs';

const setup = (models, opts = {}) => standinDaemon(models, { evict: 'checkpoint', ...opts });
/** The process state letter of /proc/PID/stat (R, S, T, Z...). */
const procState = (pid) => {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[0];
};
const imagesDir = (dir, model) => path.join(dir, 'checkpoints', model);

test('yard sleep checkpoints with CRIU; a request restores the same process', async () => {
    const { dir, d, ask } = await setup(['c']);
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    const before = await entry(dir, 'c');
    assert.ok((await usedBy(dir, 'c')) > 0);

    const r = await yard(['sleep', 'c'], { stateDir: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /'c' is checkpointed/);
    const cp = await entry(dir, 'c');
    assert.equal(cp.state, 'checkpointed');
    assert.match(cp.reason, /checkpointed with CRIU to .*checkpoints\/c/);
    assert.ok(fs.existsSync(path.join(imagesDir(dir, 'c'), 'inventory.img')), 'no images written');
    assert.equal(await usedBy(dir, 'c'), 0, 'a checkpointed engine still holds GPU memory');
    assert.match(procState(before.pid), /[Tt]/, 'the dumped tree still runs on the CPU');

    const a = await ask('c');
    assert.equal(a.status, 200, a.body);
    const back = await entry(dir, 'c');
    assert.equal(back.state, 'ready');
    assert.match(back.reason, /restored from a CRIU checkpoint/);
    assert.equal(back.pid, before.pid, 'a restore keeps the pid');
    assert.ok((await usedBy(dir, 'c')) > 0);
    assert.ok(!fs.existsSync(imagesDir(dir, 'c')), 'images kept without tools.keep_checkpoints');
    await d.stop();
    assert.ok(!pidAlive(before.pid), 'the engine outlived the daemon');
});

test('an exclusive swap checkpoints the other member; keep_checkpoints keeps the images', async () => {
    const { dir, d, ask } = await setup(['a', 'b'], {
        groups: 'groups:\n  g: { exclusive: true, members: [a, b] }\n',
        keep: true,
    });
    assert.equal((await ask('a')).status, 200);
    const aPid = (await entry(dir, 'a')).pid;
    assert.equal((await ask('b')).status, 200);
    assert.equal((await entry(dir, 'a')).state, 'checkpointed');
    assert.equal((await ask('a')).status, 200);
    assert.equal((await entry(dir, 'a')).pid, aPid, 'a was cold-started instead of restored');
    assert.equal((await entry(dir, 'b')).state, 'checkpointed');
    assert.ok(fs.existsSync(path.join(imagesDir(dir, 'a'), 'pstree.img')), 'images removed despite keep');
    await d.stop();
});

test('a restore that fails stops the instance and says why; the next request starts it cold', async () => {
    const { dir, d, ask } = await setup(['c']);
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    const pid = (await entry(dir, 'c')).pid;
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    fs.rmSync(path.join(imagesDir(dir, 'c'), 'inventory.img'));

    const w = await yard(['wake', 'c'], { stateDir: dir });
    assert.notEqual(w.code, 0);
    assert.match(w.stderr, /cannot wake 'c': .*inventory\.img/);
    const e = await waitState(dir, 'c', 'stopped', 10000);
    assert.match(e.reason, /restore failed: '\S*criu restore .*' exited 1: .*inventory\.img/);
    assert.ok(!pidAlive(pid), 'the stopped tree of a failed restore was left behind');

    const a = await ask('c');
    assert.equal(a.status, 200, a.body);
    assert.notEqual((await entry(dir, 'c')).pid, pid);
    await d.stop();
});

test('a checkpoint CRIU refuses (GPU memory still held) stops the instance', async () => {
    // Without cuda-checkpoint's suspend, the CRIU stand-in refuses the dump as the
    // real one would (device memory): a fake cuda-checkpoint that "succeeds" at
    // nothing leaves the ledger line in place.
    const dir = tmpdir();
    const fake = path.join(dir, 'fake-cuda-checkpoint');
    fs.writeFileSync(fake, '#!/bin/sh\ncase "$*" in *--get-state*) echo checkpointed ;; esac\nexit 0\n');
    fs.chmodSync(fake, 0o755);
    const { d } = await setup(['c'], { dir, cudaTool: fake });
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    const pid = (await entry(dir, 'c')).pid;
    const r = await yard(['sleep', 'c'], { stateDir: dir });
    assert.notEqual(r.code, 0);
    const e = await waitState(dir, 'c', 'stopped', 10000);
    assert.match(e.reason, /checkpoint failed: '\S*criu dump .*' exited 1: .*holds CUDA device memory/);
    assert.ok(!pidAlive(pid));
    await d.stop();
});

test('a daemon restarted while a model is checkpointed adopts it and restores it on request', async () => {
    const dir = tmpdir();
    const first = await setup(['c'], { dir, args: ['--keep-engines'] });
    assert.equal((await yard(['start', 'c', '--wait'], { stateDir: dir })).code, 0);
    const pid = (await entry(dir, 'c')).pid;
    assert.equal((await yard(['sleep', 'c'], { stateDir: dir })).code, 0);
    await first.d.stop();

    const second = await startDaemon({
        config: first.config,
        stateDir: dir,
        env: { YARD_STANDIN_STATE: path.join(dir, 'standin') },
    });
    const e = await entry(dir, 'c');
    assert.equal(e.state, 'checkpointed');
    assert.match(e.reason, /adopted checkpointed/);
    const a = await first.ask('c');
    assert.equal(a.status, 200, a.body);
    assert.equal((await entry(dir, 'c')).pid, pid, 'cold-started instead of restored');
    await second.stop();
    assert.ok(!pidAlive(pid));
});
