// cuda_suspend through the cuda-checkpoint stand-in (tools/standins/): the
// engine keeps running with all of its GPU memory given back, a request
// resumes it, an exclusive-group swap suspends instead of stopping, and a
// suspend that fails stops the instance so the memory comes back.
import { test } from 'node:test';
import path from 'node:path';
import { assert, yard, pidAlive, waitState } from './lib/harness.mjs';
import { standinDaemon, entry, usedBy } from './lib/standins.mjs';

const setup = (models, { tool, groups } = {}) => standinDaemon(models, { cudaTool: tool, groups });

test('yard sleep suspends with cuda-checkpoint; a request resumes the same process', async () => {
    const { dir, d, ask } = await setup(['l']);
    assert.equal((await yard(['start', 'l', '--wait'], { stateDir: dir })).code, 0);
    const before = await entry(dir, 'l');
    assert.ok((await usedBy(dir, 'l')) > 0);

    const r = await yard(['sleep', 'l'], { stateDir: dir });
    assert.equal(r.code, 0, r.stderr);
    const asleep = await entry(dir, 'l');
    assert.equal(asleep.state, 'sleeping');
    assert.match(asleep.reason, /suspended with cuda-checkpoint/);
    assert.equal(asleep.pid, before.pid);
    assert.ok(pidAlive(before.pid));
    assert.equal(await usedBy(dir, 'l'), 0, 'a suspended engine still holds GPU memory');

    const a = await ask('l');
    assert.equal(a.status, 200, a.body);
    const back = await entry(dir, 'l');
    assert.equal(back.state, 'ready');
    assert.equal(back.pid, before.pid);
    assert.ok((await usedBy(dir, 'l')) > 0);
    await d.stop();
});

test('an exclusive swap suspends the other member instead of stopping it', async () => {
    const { dir, d, ask } = await setup(['a', 'b'], {
        groups: 'groups:\n  g: { exclusive: true, members: [a, b] }\n',
    });
    assert.equal((await ask('a')).status, 200);
    const aPid = (await entry(dir, 'a')).pid;
    assert.equal((await ask('b')).status, 200);
    const a = await entry(dir, 'a');
    assert.equal(a.state, 'sleeping');
    assert.equal(a.pid, aPid);
    assert.equal((await ask('a')).status, 200);
    assert.equal((await entry(dir, 'a')).pid, aPid, 'a was cold-started instead of resumed');
    await d.stop();
});

test('a suspend that fails stops the instance and says why', async () => {
    const { dir, d } = await setup(['l'], { tool: '/nonexistent/cuda-checkpoint' });
    assert.equal((await yard(['start', 'l', '--wait'], { stateDir: dir })).code, 0);
    const pid = (await entry(dir, 'l')).pid;
    await yard(['sleep', 'l'], { stateDir: dir });
    const e = await waitState(dir, 'l', 'stopped', 10000);
    assert.match(e.reason, /suspend failed: cannot run '\/nonexistent\/cuda-checkpoint'/);
    assert.ok(!pidAlive(pid), 'the engine kept its GPU memory after a failed suspend');
    await d.stop();
});
