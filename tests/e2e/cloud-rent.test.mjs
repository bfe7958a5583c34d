// `yard cloud rent`, `ls` and `release` against the Vast stand-in (lib/vast-standin.mjs),
// whose machines are real sshd processes (docs/cloud.md, "Renting").
//
//   - a rent: the create's body (image, disk in GB, the label naming this daemon,
//     runtype, onstart), the key attached, the instance watched until it runs, ssh
//     answering with the cloud's key, the GPUs read: a host of kind rented in
//     `yard hosts`, a row in `yard cloud ls` (offer, machine, $/h, state, age, spent)
//   - a daemon restart adopts it (the same instance, nothing new rented); release
//     destroys it and the row goes
//   - the first offer's instance exits: destroyed, the next offer rented
//   - a serving machine's instance exits: read as soon as its ssh fails (not at
//     the 10 s read of a ready machine), destroyed and recorded bad, the next
//     request rents anew
//   - a create that fails but returns a contract: that instance destroyed
//   - max_machines: a second rent is refused while one machine is rented
//   - kill -9 of the daemon while the create is under way, and while ssh is awaited:
//     the next daemon finds the instance (by its label, or by its row) and no
//     instance is left that yard does not know about
//   - an instance that carries no label of this daemon is never touched
//   - the history of machines: one that failed its start ranks below a pricier
//     clean one, with the reason, after a restart; its bad-host entry expires
//     after the cloud's bad_host_ttl, one added by hand never does

import { describe, test, before, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { assert, tmpdir, freePort, startDaemon, waitFor, yard, yardJson, MOCK_ENGINE_BIN } from './lib/harness.mjs';
import { startVastStandin } from './lib/vast-standin.mjs';
import { standinDaemon, creates, alive } from './lib/cloud.mjs';
import { sshdSkipReason } from './lib/sshd.mjs';

const skip = sshdSkipReason();

const OFFERS = [
    { id: 201, machine_id: 2001, dph_total: 0.3, gpu_name: 'RTX 4090', gpu_ram: 24564 },
    { id: 202, machine_id: 2002, dph_total: 0.4, gpu_name: 'RTX 4090', gpu_ram: 24564 },
    { id: 203, machine_id: 2003, dph_total: 0.5, gpu_name: 'RTX 4090', gpu_ram: 24564 },
];

const daemon = (s, { dir = tmpdir(), cloud = '', models = '', port = null } = {}) => standinDaemon(s, { dir, cloud, models, port });

const ls = (dir) => yardJson(['cloud', 'ls', '--json'], { stateDir: dir });

describe('cloud rent, ls, release', { skip: skip ?? false }, () => {
    let s;
    before(async () => {
        s = await startVastStandin({ offers: OFFERS });
    });
    after(async () => {
        await s.stop();
    });

    test('rent: the create, ssh with the key, a host of kind rented; restart adopts; release destroys', async () => {
        const port = await freePort();
        // a model may name the rented machine as its pod
        const models =
            'models:\n' +
            '  m:\n    engine: vllm\n    pod: vast-1\n' +
            `    cmd: "${MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s"\n`;
        let { dir, d, config } = await daemon(s, { models, port });
        try {
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            assert.match(r.stdout, /^rented vast-1;/);

            const sent = creates(s);
            assert.equal(sent.length, 1);
            assert.equal(sent[0].path, '/api/v0/asks/201/');
            const body = sent[0].json;
            assert.equal(body.image, 'vllm/vllm-openai:latest');
            assert.equal(body.disk, 40);
            assert.equal(body.runtype, 'ssh_direc ssh_proxy');
            assert.match(body.label, /^yard-[0-9a-f]{8}-vast-1$/);
            assert.deepEqual(body.env, {});
            assert.match(body.onstart, /no_auto_tmux/);
            const [inst] = alive(s);
            assert.equal(inst.label, body.label);
            assert.ok(inst.keys.includes(s.clientKey.pub), 'the cloud key was attached');

            const hosts = await yardJson(['hosts', '--json'], { stateDir: dir });
            const h = hosts.find((x) => x.name === 'vast-1');
            assert.ok(h, JSON.stringify(hosts));
            assert.equal(h.kind, 'rented');
            assert.equal(h.reachable, true);
            assert.equal(h.gpus.length, 1);
            assert.match(h.gpus[0].name, /4090/);

            let rows = await ls(dir);
            assert.equal(rows.length, 1);
            assert.equal(rows[0].name, 'vast-1');
            assert.equal(rows[0].contract, inst.id);
            assert.equal(rows[0].offer, 201);
            assert.equal(rows[0].machine_id, 2001);
            assert.equal(rows[0].state, 'ready');
            assert.equal(rows[0].dph, 0.3);
            assert.equal(typeof rows[0].spent, 'number');
            const table = await yard(['cloud', 'ls'], { stateDir: dir });
            assert.match(table.stdout, /^NAME +OFFER +MACHINE +INSTANCE +GPUS +\$\/H +STATE +AGE +SPENT\n/);
            assert.match(table.stdout, /vast-1 +201 +2001 +\d+ +1x RTX 4090 .* 0\.300 +ready /);

            // the pod runner drives it over ssh like any pod
            const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0 });
            const chat = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
            assert.ok(chat.choices[0].message.content.length > 0);
            const ps = await yardJson(['ps', '--json'], { stateDir: dir });
            assert.equal(ps.find((x) => x.name === 'm')?.host, 'vast-1');
            // `yard gpus` lists the rented machine's GPUs, as its last poll saw them
            const gpus = await yardJson(['gpus', '--json'], { stateDir: dir });
            const rentedGpus = gpus.pods.find((x) => x.name === 'vast-1');
            assert.ok(rentedGpus, JSON.stringify(gpus.pods));
            assert.equal(rentedGpus.kind, 'rented');
            assert.equal(rentedGpus.reachable, true);
            assert.equal(rentedGpus.gpus.length, 1);
            assert.match(rentedGpus.gpus[0].name, /4090/);
            // and `yard models` says which catalog models fit on it
            const cat = await yardJson(['models', '--json'], { stateDir: dir });
            const onRented = cat.hosts.find((x) => x.host === 'vast-1');
            assert.ok(onRented, JSON.stringify(cat.hosts.map((x) => x.host)));
            assert.match(onRented.gpus[0].name, /4090/);
            assert.ok(onRented.models.length > 0);
            assert.ok(onRented.models.some((x) => x.fits), 'a catalog model fits a 24 GiB GPU');
            const gpuTable = await yard(['gpus'], { stateDir: dir });
            assert.match(gpuTable.stdout, /\nrented machine 'vast-1'\n/);
            const stop = await yard(['stop', 'm'], { stateDir: dir });
            assert.equal(stop.code, 0, stop.stderr);

            // a restart: the same instance, adopted; nothing rented again
            await d.stop();
            ({ d } = { d: await startDaemon({ config, stateDir: dir, env: { VAST_API_KEY: s.apiKey } }) });
            rows = await ls(dir);
            assert.equal(rows.length, 1);
            assert.equal(rows[0].contract, inst.id);
            assert.equal(creates(s).length, 1);
            const again = await yardJson(['hosts', '--json'], { stateDir: dir });
            assert.equal(again.find((x) => x.name === 'vast-1')?.kind, 'rented');

            const rel = await yard(['cloud', 'release', 'vast-1'], { stateDir: dir });
            assert.equal(rel.code, 0, rel.stderr);
            assert.equal(s.instance(inst.id), null, 'destroyed');
            assert.deepEqual(await ls(dir), []);
            const gone = await yardJson(['hosts', '--json'], { stateDir: dir });
            assert.equal(gone.find((x) => x.name === 'vast-1'), undefined);
            const none = await yard(['cloud', 'release', 'vast-1'], { stateDir: dir });
            assert.equal(none.code, 1);
            assert.equal(none.stderr, "yard: no rented machine named 'vast-1'; see 'yard cloud ls'\n");
        } finally {
            await d.stop();
        }
    });

    test('an instance that exits is destroyed and the next offer rented; max_machines holds', async () => {
        await s.script({ kind: 'exited', offer: 201 });
        const { dir, d } = await daemon(s);
        try {
            const before_ = creates(s).length;
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            const sent = creates(s).slice(before_);
            assert.deepEqual(
                sent.map((x) => x.path),
                ['/api/v0/asks/201/', '/api/v0/asks/202/'],
            );
            const live = alive(s);
            assert.equal(live.length, 1, 'the exited one was destroyed');
            assert.equal(live[0].offer.id, 202);
            const events = await yard(['events', '-n', '100'], { stateDir: dir });
            assert.match(events.stdout, /cannot run: status exited/);

            const second = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(second.code, 1);
            assert.match(second.stderr, /has 1 machine rented, its max_machines/);
            const rel = await yard(['cloud', 'release', (await ls(dir))[0].name], { stateDir: dir });
            assert.equal(rel.code, 0, rel.stderr);
            assert.equal(alive(s).length, 0);
        } finally {
            await d.stop();
        }
    });

    test('missing GPUs: the next offer; a failing setup: the rent fails, its machine destroyed', async () => {
        // a stand-in of its own: the faults scripted before stay on the shared one
        const s = await startVastStandin({ offers: OFFERS });
        await s.script({ kind: 'missing_gpus', offer: 201 });
        let { dir, d, config } = await daemon(s);
        try {
            const before_ = creates(s).length;
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            assert.deepEqual(
                creates(s)
                    .slice(before_)
                    .map((x) => x.path),
                ['/api/v0/asks/201/', '/api/v0/asks/202/'],
            );
            const events = await yard(['events', '-n', '100'], { stateDir: dir });
            assert.match(events.stdout + events.stderr, /nvidia-smi shows 0 GPUs where the offer promised 1|cannot read its GPUs/);
            await yard(['cloud', 'release', (await ls(dir))[0].name], { stateDir: dir });
            assert.equal(alive(s).length, 0);

            // the machine is in the bad-host registry, across a restart, and left out of searches
            const bad = () => yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
            let rows = await bad();
            assert.equal(rows.length, 1);
            assert.equal(rows[0].machine_id, 2001);
            assert.equal(rows[0].cloud, 'vast');
            assert.equal(rows[0].by_hand, false);
            assert.match(rows[0].reason, /nvidia-smi shows 0 GPUs|cannot read its GPUs/);
            await d.stop();
            d = await startDaemon({ config, stateDir: dir, env: { VAST_API_KEY: s.apiKey } });
            assert.deepEqual((await bad()).map((b) => b.machine_id), [2001]);
            const table = await yard(['cloud', 'bad'], { stateDir: dir });
            assert.match(table.stdout, /^MACHINE +CLOUD +SINCE +EXPIRES +REASON\n2001 +vast +\d+s ago +in 16\dh\d\dm +/);
            const add = await yard(['cloud', 'bad', '--add', '2003'], { stateDir: dir });
            assert.equal(add.code, 0, add.stderr);
            const offers = await yardJson(['cloud', 'offers', 'vast', '--json'], { stateDir: dir });
            assert.deepEqual(offers.query.machine_id, { notin: [2001, 2003] });
            assert.deepEqual(
                offers.offers.map((o) => o.machine_id),
                [2002],
            );
            const forget = await yard(['cloud', 'bad', '--forget', '2001'], { stateDir: dir });
            assert.equal(forget.code, 0, forget.stderr);
            rows = await bad();
            assert.deepEqual(rows.map((b) => [b.machine_id, b.by_hand]), [[2003, true]]);
            const again = await yard(['cloud', 'bad', '--forget', '2001'], { stateDir: dir });
            assert.equal(again.code, 1);
            assert.equal(again.stderr, "yard: machine 2001 is not in the bad-host registry; see 'yard cloud bad'\n");
            await yard(['cloud', 'bad', '--forget', '2003'], { stateDir: dir });
        } finally {
            await d.stop();
        }
        ({ dir, d } = await daemon(s, { cloud: '    setup: "echo broken >&2; exit 3"\n' }));
        try {
            const before_ = creates(s).length;
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 1);
            assert.match(r.stderr, /^yard: cloud 'vast': the cloud's setup failed: .*exited 3.*broken/);
            assert.equal(creates(s).length - before_, 1, 'no other offer tried');
            await waitFor(() => alive(s).length === 0, { what: 'the machine destroyed' });
            await waitFor(async () => (await ls(dir)).length === 0, { what: 'the rental gone' });
        } finally {
            await d.stop();
            await s.stop();
        }
    });

    test('a 429 burst on the create is retried; an offer gone at create tries the next, blaming no machine', async () => {
        const s = await startVastStandin({ offers: OFFERS });
        await s.script({ kind: 'offer_gone', offer: 201 }, { kind: 'rate_limit', method: 'PUT', path: '/api/v0/asks/', times: 2 });
        const { dir, d } = await daemon(s);
        try {
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            assert.deepEqual(
                creates(s).map((x) => x.path),
                ['/api/v0/asks/201/', '/api/v0/asks/201/', '/api/v0/asks/201/', '/api/v0/asks/202/'],
            );
            assert.deepEqual(
                alive(s).map((i) => i.offer.id),
                [202],
            );
            assert.deepEqual(await yardJson(['cloud', 'bad', '--json'], { stateDir: dir }), []);
            const ev = await yard(['events', '-n', '100'], { stateDir: dir });
            assert.match(ev.stdout, /no_such_ask/);
            await yard(['cloud', 'release', (await ls(dir))[0].name], { stateDir: dir });
            assert.equal(alive(s).length, 0);
        } finally {
            await d.stop();
            await s.stop();
        }
    });

    test('a create that fails but returns a contract: that instance is destroyed', async () => {
        const s = await startVastStandin({ offers: OFFERS });
        await s.script({ kind: 'create_fails', offer: 201 });
        const { dir, d } = await daemon(s);
        try {
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            const live = alive(s);
            assert.equal(live.length, 1);
            assert.equal(live[0].offer.id, 202);
            await yard(['cloud', 'release', (await ls(dir))[0].name], { stateDir: dir });
            assert.equal(alive(s).length, 0);
        } finally {
            await d.stop();
            await s.stop();
        }
    });
});

describe('a rented machine lost while it serves', { skip: skip ?? false }, () => {
    test('its instance exits: the host is lost, its instance read once ssh fails, the machine destroyed and recorded bad, the next request rents anew', async () => {
        const s = await startVastStandin({ offers: OFFERS });
        const port = await freePort();
        const models =
            'models:\n' +
            '  c:\n    engine: vllm\n    hosts: [vast]\n' +
            `    cmd: "${MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s"\n`;
        const { dir, d } = await daemon(s, { models, port });
        const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000 });
        try {
            const first = await client.chat.completions.create({ model: 'c', messages: [{ role: 'user', content: 'one' }] });
            assert.ok(first.choices[0].message.content.length > 0);
            const [inst] = alive(s);
            assert.equal(inst.offer.id, 201);
            await s.script({ kind: 'exited', instance: inst.id });
            await waitFor(() => s.instance(inst.id) === null, { what: 'the lost machine destroyed', timeoutMs: 40000 });
            await waitFor(async () => (await ls(dir)).length === 0, { what: 'its rental gone' });
            const ev = await yard(['events', 'c', '-n', '200'], { stateDir: dir });
            assert.match(ev.stdout, new RegExp(`instance ${inst.id} is exited while serving`));
            // read as soon as its ssh failed, not at the 10 s read of a ready machine
            assert.match(d.logText(), /'vast-1': ssh stopped answering; reading its instance now/);
            const bad = await yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
            assert.deepEqual(bad.map((b) => b.machine_id), [2001]);
            // the next request rents another machine (2001 is left out) and is answered there
            const second = await client.chat.completions.create({ model: 'c', messages: [{ role: 'user', content: 'two' }] });
            assert.ok(second.choices[0].message.content.length > 0);
            const live = alive(s);
            assert.equal(live.length, 1);
            assert.equal(live[0].offer.id, 202);
        } finally {
            await d.stop();
            await s.stop();
        }
    });
});

describe('the history of machines ranks the offers; bad-host entries expire', { skip: skip ?? false }, () => {
    test('a machine that failed ranks below a pricier clean one, with the reason, across a restart; its entry expires', async () => {
        const s = await startVastStandin({ offers: OFFERS });
        await s.script({ kind: 'exited', offer: 201 });
        let { dir, d } = await daemon(s, { cloud: '    bad_host_ttl: 1h\n' });
        const offers = () => yardJson(['cloud', 'offers', 'vast', '--json'], { stateDir: dir });
        const bad = () => yardJson(['cloud', 'bad', '--json'], { stateDir: dir });
        try {
            // 2001 fails its start (the machine's fault), 2002 gets ready
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            assert.equal(alive(s)[0].offer.id, 202);
            await yard(['cloud', 'release', (await ls(dir))[0].name], { stateDir: dir });

            // the registry holds 2001 for the cloud's ttl; one added by hand never expires
            let rows = await bad();
            assert.deepEqual(rows.map((b) => b.machine_id), [2001]);
            assert.equal(rows[0].expires_ms - rows[0].added_ms, 3600000);
            const add = await yard(['cloud', 'bad', '--add', '2003'], { stateDir: dir });
            assert.equal(add.code, 0, add.stderr);
            rows = await bad();
            assert.deepEqual(rows.map((b) => [b.machine_id, b.expires_ms]), [[2001, rows[0].expires_ms], [2003, null]]);
            const table = await yard(['cloud', 'bad'], { stateDir: dir });
            assert.match(table.stdout, /^MACHINE +CLOUD +SINCE +EXPIRES +REASON\n2001 +vast +\d+s ago +in (59m|1h00m) +.*exited\n2003 +- +\d+s ago +never +added by hand/);
            await yard(['cloud', 'bad', '--forget', '2003'], { stateDir: dir });

            // 2002 was ready once: above 2003, cheaper but never rented; 2001 is left out
            let o = await offers();
            assert.deepEqual(o.query.machine_id, { notin: [2001] });
            assert.deepEqual(o.offers.map((x) => x.machine_id), [2002, 2003]);
            assert.match(o.offers[0].reason, /^machine 2002 was ready once \(mean \d+ s to ready\), no failures$/);
            assert.equal(o.offers[1].reason, 'machine 2003 has no rental on record; the one above was ready once');
            assert.equal(o.offers[0].history.ready, 1);
            assert.equal(typeof o.offers[0].history.mean_ready_s, 'number');
        } finally {
            await d.stop();
        }
        // a daemon with a short ttl: the entry expires, the history stays
        ({ dir, d } = await daemon(s, { dir, cloud: '    bad_host_ttl: 1s\n' }));
        try {
            await waitFor(async () => (await bad()).length === 0, { what: "2001's entry expired", intervalMs: 200 });
            const o = await offers();
            assert.equal(o.query.machine_id, undefined, 'no machine left out');
            assert.deepEqual(o.offers.map((x) => x.machine_id), [2002, 2003, 2001]);
            assert.match(
                o.offers[2].reason,
                /^machine 2001 failed once \(instance \d+ cannot run: status exited\) at \d{4}-\d\d-\d\d \d\d:\d\d UTC$/,
            );
            const h = o.offers[2].history;
            assert.equal(h.ready, 0);
            assert.equal(h.failed, 1);
            assert.equal(h.mean_ready_s, null);
            assert.match(h.last_failure.reason, /cannot run: status exited/);
            assert.equal(typeof h.last_failure.at_ms, 'number');
            const t = await yard(['cloud', 'offers', 'vast'], { stateDir: dir });
            assert.match(t.stdout, /\n3 +201 +2001 .* machine 2001 failed once \(instance \d+ cannot run/);
        } finally {
            await d.stop();
            await s.stop();
        }
    });
});

describe('release_on_exit', { skip: skip ?? false }, () => {
    test('a stop destroys the machines of a cloud with release_on_exit, and forgets them', async () => {
        const s = await startVastStandin({ offers: OFFERS });
        let { dir, d, config } = await daemon(s, { cloud: '    release_on_exit: true\n' });
        try {
            const r = await yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            assert.equal(r.code, 0, r.stderr);
            const [inst] = alive(s);
            await d.stop();
            assert.equal(s.instance(inst.id), null, 'destroyed before the daemon exited');
            assert.match(d.logText(), /release_on_exit/);
            d = await startDaemon({ config, stateDir: dir, env: { VAST_API_KEY: s.apiKey } });
            assert.deepEqual(await ls(dir), []);
        } finally {
            await d.stop();
            await s.stop();
        }
    });
});

describe('kill -9 of the daemon leaves no machine it does not know', { skip: skip ?? false }, () => {
    let s;
    let onCreate = null;
    before(async () => {
        s = await startVastStandin({ offers: OFFERS, onCreate: (id) => onCreate?.(id) });
    });
    after(async () => {
        await s.stop();
    });

    test('during the create: the next daemon finds the instance by its label and destroys it', async () => {
        const dir = tmpdir();
        let release;
        const held = new Promise((r) => (release = r));
        let created = null;
        onCreate = async (id) => {
            created = id;
            await held;
        };
        let { d, config } = await daemon(s, { dir });
        try {
            const rent = yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            await waitFor(() => created !== null, { what: 'the create' });
            d.kill('SIGKILL');
            assert.ok(await d.waitExit(), 'the daemon exited');
            release();
            onCreate = null;
            await rent;
            assert.ok(s.instance(created), 'the instance was rented');
            d = await startDaemon({ config, stateDir: dir, env: { VAST_API_KEY: s.apiKey } });
            await waitFor(() => s.instance(created) === null, { what: 'the instance destroyed', timeoutMs: 20000 });
            await waitFor(async () => (await ls(dir)).length === 0, { what: 'the row gone' });
        } finally {
            release();
            onCreate = null;
            await d.stop();
        }
    });

    test('while ssh is awaited: the next daemon knows the machine, and releases it', async () => {
        await s.script({ kind: 'ssh_dead', offer: 201 });
        const dir = tmpdir();
        let { d, config } = await daemon(s, { dir });
        try {
            const rent = yard(['cloud', 'rent', 'vast'], { stateDir: dir });
            await waitFor(async () => (await ls(dir))[0]?.state === 'connecting', {
                what: 'ssh awaited',
                timeoutMs: 20000,
            });
            const id = (await ls(dir))[0].contract;
            d.kill('SIGKILL');
            assert.ok(await d.waitExit(), 'the daemon exited');
            await rent;
            d = await startDaemon({ config, stateDir: dir, env: { VAST_API_KEY: s.apiKey } });
            const rows = await ls(dir);
            assert.equal(rows.length, 1);
            assert.equal(rows[0].contract, id);
            assert.ok(s.instance(id));
            assert.deepEqual(
                alive(s).map((i) => i.id),
                [id],
                'no instance yard does not know',
            );
            const rel = await yard(['cloud', 'release', rows[0].name], { stateDir: dir });
            assert.equal(rel.code, 0, rel.stderr);
            assert.equal(s.instance(id), null);
        } finally {
            await d.stop();
        }
    });
});

describe('a model that lists a cloud rents when nothing before it serves', { skip: skip ?? false }, () => {
    let s;
    before(async () => {
        s = await startVastStandin({ offers: OFFERS });
    });
    after(async () => {
        await s.stop();
    });

    test('a request for a cloud-only model rents, serves, goes idle, and the machine is destroyed', async () => {
        await s.script({ kind: 'exited', offer: 201 });
        const port = await freePort();
        const models =
            'models:\n' +
            '  c:\n    engine: vllm\n    hosts: [vast]\n    ttl: 3s\n' +
            `    cmd: "${MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME} --load-time 0s"\n`;
        const { dir, d } = await daemon(s, {
            models,
            port,
            cloud: '    idle_release: 1s\n    setup: "echo set up > ~/setup-ran"\n',
        });
        try {
            assert.equal(alive(s).length, 0);
            // a streaming client waits with the rent's steps as SSE comments
            const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
                method: 'POST',
                headers: { 'content-type': 'application/json' },
                body: JSON.stringify({ model: 'c', stream: true, messages: [{ role: 'user', content: 'rent me' }] }),
            });
            assert.equal(res.status, 200);
            const text = await res.text();
            assert.match(text, /^: renting for c: vast-\d+: renting offer 201 /m);
            assert.match(text, /^: renting for c: vast-\d+: .*cannot run: status exited/m);
            assert.match(text, /^: renting for c: vast-\d+: the cloud's setup ran$/m);
            assert.match(text, /^: renting for c: vast-\d+: ready$/m);
            assert.match(text, /^data: \[DONE\]$/m);
            const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0, timeout: 60000 });
            const chat = await client.chat.completions.create({ model: 'c', messages: [{ role: 'user', content: 'and again' }] });
            assert.ok(chat.choices[0].message.content.length > 0);
            // the first offer's instance exited: destroyed, the next one serves
            const live = alive(s);
            assert.equal(live.length, 1);
            assert.equal(live[0].offer.id, 202);
            const ps = await yardJson(['ps', '--json'], { stateDir: dir });
            const row = ps.find((x) => x.name === 'c');
            assert.match(row.host, /^vast-\d+$/);
            const rows = await ls(dir);
            assert.equal(rows.length, 1);
            assert.equal(rows[0].name, row.host);
            const ev = await yard(['events', 'c', '-n', '200'], { stateDir: dir });
            assert.match(ev.stdout, /renting offer 201/);
            assert.match(ev.stdout, /cannot run: status exited/);
            assert.match(ev.stdout, /running the cloud's setup/);
            assert.match(ev.stdout, / ready$/m);
            assert.equal(fs.readFileSync(path.join(s.machine(live[0].id).home, 'setup-ran'), 'utf8'), 'set up\n');

            // idle: the model stops after its ttl, the machine after idle_release
            await waitFor(() => alive(s).length === 0, { what: 'the machine destroyed', timeoutMs: 30000 });
            await waitFor(async () => (await ls(dir)).length === 0, { what: 'the rental gone' });
            const after_ = await yard(['events', 'c', '-n', '200'], { stateDir: dir });
            assert.match(after_.stdout, /idle_release/);
        } finally {
            await d.stop();
        }
    });
});
