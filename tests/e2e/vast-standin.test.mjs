// The Vast.ai stand-in (lib/vast-standin.mjs) driven with plain fetch calls and
// real ssh, no daemon: the API's shapes (auth, search, create, show, destroy,
// keys), the instance lifecycle on its manual and its own clock, the machines
// (sshd by the direct port and the proxy, the stand-in nvidia-smi, port
// mappings, onstart), every scripted fault, the money count, and machines in
// network namespaces. docs/vast.md has the API; docs/testing.md the stand-in.
//
// The stand-in and its port forwards live in this process: every child process
// here is asynchronous (a blocked event loop would stall the forwards).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { exec, spawnSync } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { sshdSkipReason } from './lib/sshd.mjs';
import { startVastStandin, netnsSkipReason, OCI_MSG } from './lib/vast-standin.mjs';

const NO_SSHD = sshdSkipReason();
const NO_NETNS = NO_SSHD || netnsSkipReason();

/** One API call: {status, type, text, json, headers}. key: null sends none. */
async function call(s, method, p, body, { key = s.apiKey, query = '' } = {}) {
    const headers = {};
    if (key !== null) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(`${s.url}${p}${query}`, {
        method,
        headers,
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    let json;
    try {
        json = JSON.parse(text);
    } catch {
        json = undefined;
    }
    return { status: r.status, type: r.headers.get('content-type'), text, json, headers: r.headers };
}

const search = async (s, q) => {
    const r = await call(s, 'POST', '/api/v0/bundles/', q);
    assert.equal(r.status, 200, r.text);
    return r.json.offers.map((o) => o.id);
};

async function rent(s, offer, body = {}) {
    const r = await call(s, 'PUT', `/api/v0/asks/${offer}/`, { client_id: 'me', image: 'vllm/vllm-openai:latest', disk: 40, ...body });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.success, true, r.text);
    return r.json.new_contract;
}

const show = async (s, id) => (await call(s, 'GET', `/api/v0/instances/${id}/`)).json.instances;

/** A shell command, asynchronously: {code, stdout, stderr}. */
function sh(cmd, timeoutMs = 30000) {
    return new Promise((resolve) => {
        exec(cmd, { timeout: timeoutMs }, (err, stdout, stderr) => {
            resolve({ code: err ? (err.code ?? -1) : 0, stdout, stderr });
        });
    });
}

/** Reads what a TCP server at host:port sends first, or the error code. */
function readFrom(host, port) {
    return new Promise((resolve) => {
        const c = net.connect(port, host);
        let data = '';
        c.on('data', (d) => {
            data += d;
        });
        c.on('end', () => resolve({ data }));
        c.on('error', (err) => resolve({ error: err.code }));
        c.setTimeout(10000, () => {
            c.destroy();
            resolve({ error: 'timeout', data });
        });
    });
}

const quote = (text) => `'${text.replace(/'/g, "'\\''")}'`;
const SSH_OPTS = '-o ConnectTimeout=5';
/** Runs cmd on an instance's machine with the stand-in's client key. */
const ssh = (s, id, cmd, opts) => sh(`${s.sshCommand(id, opts).replace('ssh ', `ssh ${SSH_OPTS} `)} ${quote(cmd)}`);

const SMI_QUERY = 'nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free --format=csv,noheader,nounits';

const OFFERS = [
    {
        id: 1,
        machine_id: 100,
        gpu_name: 'RTX 4090',
        num_gpus: 1,
        dph_total: 0.4,
        reliability2: 0.99,
        inet_down: 900,
        geolocation: 'Oregon, US',
        cuda_max_good: 12.8,
        direct_port_count: 10,
        score: 50,
    },
    {
        id: 2,
        machine_id: 200,
        gpu_name: 'RTX 4090',
        num_gpus: 2,
        dph_total: 0.8,
        reliability2: 0.95,
        inet_down: 100,
        geolocation: 'Quebec, CA',
        score: 90,
    },
    {
        id: 3,
        machine_id: 300,
        gpu_name: 'RTX 3090',
        num_gpus: 1,
        dph_total: 0.2,
        reliability2: 0.85,
        verified: false,
        direct_port_count: 0,
        geolocation: 'DE',
        score: 70,
    },
];

describe('the API', () => {
    test('a missing or wrong key is a 401 with the API body; Bearer and ?api_key= are taken', async () => {
        const s = await startVastStandin({ offers: OFFERS, sshd: false });
        try {
            for (const key of [null, 'not-the-key', `${s.apiKey}x`]) {
                const r = await call(s, 'POST', '/api/v0/bundles/', {}, { key });
                assert.equal(r.status, 401, `key ${key}`);
                assert.equal(r.type, 'application/json');
                assert.deepEqual(r.json, { success: false, error: 'auth_error', msg: 'Invalid user key' });
            }
            const ok = await call(s, 'POST', '/api/v0/bundles/', {});
            assert.equal(ok.status, 200);
            assert.equal(ok.type, 'application/json', 'exactly: the CLI checks it so');
            const q = await call(s, 'GET', '/api/v0/instances/', undefined, { key: null, query: `?api_key=${s.apiKey}` });
            assert.equal(q.status, 200);
            assert.deepEqual(q.json, { instances: [] });
            // Every request is recorded, the refused ones too.
            assert.equal(s.state.requests.length, 5);
            assert.equal(s.state.requests[0].headers.authorization, undefined);
            assert.equal(s.state.requests[3].headers.authorization, `Bearer ${s.apiKey}`);
            assert.deepEqual(s.state.requests[3].json, {});
            assert.equal(s.state.requests[4].query.api_key, s.apiKey);
            // Paths are the API's, trailing slash included.
            const none = await call(s, 'POST', '/api/v0/bundles', {});
            assert.equal(none.status, 404);
        } finally {
            await s.stop();
        }
    });

    test('search: filters with every operator, numbers as text, order, limit, the offer fields', async () => {
        const s = await startVastStandin({ offers: [...OFFERS, { id: 4, dph_total: 0.5, storage_cost: 0.72 }], sshd: false });
        try {
            const all = await call(s, 'POST', '/api/v0/bundles/', {});
            assert.deepEqual(all.json.offers.map((o) => o.id), [1, 2, 3, 4]);
            const o1 = all.json.offers[0];
            for (const f of ['id', 'machine_id', 'host_id', 'gpu_name', 'num_gpus', 'gpu_ram', 'dph_total', 'dph_base', 'min_bid',
                'reliability2', 'inet_down', 'verified', 'direct_port_count', 'geolocation', 'cuda_max_good', 'score', 'rentable',
                'rented', 'storage_cost', 'compute_cap', 'cpu_ram', 'disk_space']) {
                assert.ok(f in o1, `offer field ${f}`);
            }
            assert.equal(o1.machine_id, 100);
            assert.equal(o1.gpu_total_ram, o1.gpu_ram);
            assert.ok(!('smi_name' in o1));
            // dstack's floor.
            const floor = {
                direct_port_count: { gte: 1 },
                reliability2: { gte: 0.9 },
                inet_down: { gt: 128 },
                verified: { eq: true },
                cuda_max_good: { gte: 12.8 },
            };
            assert.deepEqual(await search(s, { ...floor, id: { lte: 3 } }), [1]);
            assert.deepEqual(await search(s, { dph_total: { lt: 0.4 } }), [3]);
            assert.deepEqual(await search(s, { dph_total: { lte: 0.4 } }), [1, 3]);
            assert.deepEqual(await search(s, { dph_total: { gt: 0.5 } }), [2]);
            assert.deepEqual(await search(s, { dph_total: { gte: 0.5 } }), [2, 4]);
            assert.deepEqual(await search(s, { num_gpus: { eq: 2 } }), [2]);
            assert.deepEqual(await search(s, { num_gpus: { neq: 1 } }), [2]);
            assert.deepEqual(await search(s, { machine_id: { in: [100, 300] } }), [1, 3]);
            assert.deepEqual(await search(s, { machine_id: { notin: [100, 300] }, id: { lt: 4 } }), [2]);
            assert.deepEqual(await search(s, { reliability2: { gt: '0.9' }, id: { lt: 4 } }), [1, 2], 'a number sent as text');
            assert.deepEqual(await search(s, { num_gpus: { gte: 1, lte: 1 }, gpu_name: { eq: 'RTX 3090' } }), [3]);
            assert.deepEqual(await search(s, { gpu_name: { eq: 'RTX_3090' } }), [], 'names are matched as written');
            assert.deepEqual(await search(s, { geolocation: { in: ['US', 'CA'] } }), [1, 2, 4]);
            assert.deepEqual(await search(s, { geolocation: { eq: 'DE' } }), [3]);
            assert.deepEqual(await search(s, { geolocation: { notin: ['US'] } }), [2, 3]);
            assert.deepEqual(await search(s, { verified: { eq: false } }), [3]);
            assert.deepEqual(await search(s, { order: [['dph_total', 'asc']], id: { lt: 4 } }), [3, 1, 2]);
            assert.deepEqual(await search(s, { order: [['score', 'desc']], id: { lt: 4 } }), [2, 3, 1]);
            assert.deepEqual(await search(s, { order: [['num_gpus', 'desc'], ['dph_total', 'asc']], limit: 2 }), [2, 3]);
            // The CLI's full body: defaults, type, allocated_storage.
            const cli = await call(s, 'POST', '/api/v0/bundles/', {
                verified: { eq: true },
                external: { eq: false },
                rentable: { eq: true },
                rented: { eq: false },
                order: [['score', 'desc']],
                type: 'on-demand',
                limit: 10,
                allocated_storage: 5.0,
            });
            assert.deepEqual(cli.json.offers.map((o) => o.id), [4, 2, 1]);
            // dph_total is priced at the storage asked for (month = 720 h).
            const priced = async (gb) =>
                (await call(s, 'POST', '/api/v0/bundles/', { id: { eq: 4 }, allocated_storage: gb })).json.offers[0].dph_total;
            assert.equal(await priced(8), 0.5);
            assert.equal(await priced(108), 0.6);
            // The newer endpoint takes the same query wrapped in q.
            const wrapped = await call(s, 'PUT', '/api/v0/search/asks/', { select_cols: ['*'], q: { num_gpus: { eq: 2 } } });
            assert.deepEqual(wrapped.json.offers.map((o) => o.id), [2]);
            // Bad queries.
            const bads = [
                { dph_total: { below: 1 } },
                { machine_id: { in: 100 } },
                { dph_total: 0.4 },
                { type: 'cheap' },
                { order: [['dph_total', 'up']] },
            ];
            for (const bad of bads) {
                const r = await call(s, 'POST', '/api/v0/bundles/', bad);
                assert.equal(r.status, 400, JSON.stringify(bad));
                assert.equal(r.json.success, false);
                assert.equal(r.json.error, 'invalid_args');
                assert.equal(typeof r.json.msg, 'string');
            }
            const notJson = await call(s, 'POST', '/api/v0/bundles/', '{nope');
            assert.equal(notJson.status, 400);
        } finally {
            await s.stop();
        }
    });

    test('create: the body recorded, {success, new_contract}, the instance as shown, the offer taken', async () => {
        const s = await startVastStandin({ offers: OFFERS, manual: true, sshd: false });
        try {
            const body = {
                client_id: 'me',
                image: 'vllm/vllm-openai:latest',
                env: { '-p 8000:8000': '1', HF_TOKEN: 'hf_x' },
                disk: 40,
                label: 'yard-test-1',
                onstart: 'touch ~/.no_auto_tmux',
                runtype: 'ssh_direc ssh_proxy',
            };
            const r = await call(s, 'PUT', '/api/v0/asks/1/', body);
            assert.equal(r.status, 200);
            assert.deepEqual(Object.keys(r.json).sort(), ['new_contract', 'success']);
            const id = r.json.new_contract;
            assert.ok(Number.isInteger(id));
            const sent = s.state.requests.at(-1);
            assert.equal(sent.method, 'PUT');
            assert.equal(sent.path, '/api/v0/asks/1/');
            assert.deepEqual(sent.json, body);

            const inst = await show(s, id);
            assert.equal(inst.id, id);
            assert.equal(inst.actual_status, null);
            assert.equal(inst.intended_status, 'running');
            assert.equal(inst.cur_state, 'running');
            assert.equal(inst.next_state, 'running');
            assert.equal(inst.status_msg, null);
            assert.equal(inst.label, 'yard-test-1');
            assert.equal(inst.machine_id, 100);
            assert.equal(inst.image_uuid, 'vllm/vllm-openai:latest');
            assert.equal(inst.image_runtype, 'ssh_direc ssh_proxy');
            assert.deepEqual(inst.extra_env, [['-p 8000:8000', '1'], ['HF_TOKEN', 'hf_x']]);
            assert.equal(inst.disk_space, 40);
            assert.equal(inst.dph_total, 0.4);
            assert.equal(inst.is_bid, false);
            assert.equal(typeof inst.ssh_host, 'string');
            assert.ok(Number.isInteger(inst.ssh_port));
            assert.deepEqual(inst.ports, {}, 'no mapping before the container runs');
            assert.equal(inst.public_ipaddr.trim(), '127.0.0.1');
            assert.equal(typeof inst.start_date, 'number');
            // The old list shows it; the search does not list the offer any more.
            assert.deepEqual((await call(s, 'GET', '/api/v0/instances/')).json.instances.map((i) => i.id), [id]);
            assert.deepEqual(await search(s, {}), [2, 3]);

            // Renting it again: gone (410); an offer never listed: 404.
            const again = await call(s, 'PUT', '/api/v0/asks/1/', body);
            assert.equal(again.status, 410);
            assert.equal(again.json.success, false);
            assert.equal(again.json.error, 'no_such_ask');
            assert.match(again.json.msg, /no_such_ask Instance type 1 is no longer available/);
            assert.equal(again.json.ask_id, 1);
            const never = await call(s, 'PUT', '/api/v0/asks/999/', body);
            assert.equal(never.status, 404);
            assert.equal(never.json.error, 'invalid_args');
            assert.match(never.json.msg, /no_such_ask Instance type by id 999 is not available/);

            // Bad bodies.
            for (const bad of [{ disk: 10 }, { image: 'x', disk: -1 }, { image: 'x', price: 'cheap' }]) {
                const b = await call(s, 'PUT', '/api/v0/asks/2/', bad);
                assert.equal(b.status, 400, JSON.stringify(bad));
                assert.equal(b.json.error, 'invalid_args');
            }
            // env as a docker-flags string is taken but not applied.
            const flags = await rent(s, 2, { env: '-p 8000:8000 -e A=b', runtype: 'ssh_direc ssh_proxy' });
            assert.deepEqual((await show(s, flags)).extra_env, []);
            // A label can be changed.
            const l = await call(s, 'PUT', `/api/v0/instances/${id}/`, { label: 'renamed' });
            assert.equal(l.status, 200);
            assert.equal((await show(s, id)).label, 'renamed');
            assert.deepEqual(s.state.errors, []);
        } finally {
            await s.stop();
        }
    });

    test('show and destroy: unknown ids, the v1 list with filters and pages', async () => {
        const s = await startVastStandin({
            offers: [{ id: 11 }, { id: 12 }, { id: 13 }],
            manual: true,
            sshd: false,
        });
        try {
            const a = await rent(s, 11, { label: 'a' });
            const b = await rent(s, 12, { label: 'b' });
            const c = await rent(s, 13, { label: 'b' });
            const v1 = (query) => call(s, 'GET', '/api/v1/instances/', undefined, { query });
            const enc = (o) => encodeURIComponent(JSON.stringify(o));
            const p1 = await v1(`?limit=2&order_by=${enc([{ col: 'id', dir: 'asc' }])}`);
            assert.equal(p1.status, 200);
            assert.deepEqual(p1.json.instances.map((i) => i.id), [a, b]);
            assert.equal(p1.json.total_instances, 3);
            assert.deepEqual(p1.json.label_counts, { a: 1, b: 2 });
            assert.equal(typeof p1.json.next_token, 'string');
            const p2 = await v1(`?limit=2&after_token=${encodeURIComponent(p1.json.next_token)}`);
            assert.deepEqual(p2.json.instances.map((i) => i.id), [c]);
            assert.equal(p2.json.next_token, null);
            const only = await v1(`?select_filters=${enc({ label: { eq: 'b' } })}&order_by=${enc([{ col: 'id', dir: 'desc' }])}`);
            assert.deepEqual(only.json.instances.map((i) => i.id), [c, b]);
            assert.equal((await v1('?limit=100')).json.instances.length, 3, 'the limit is capped at 25, not refused');

            const d = await call(s, 'DELETE', `/api/v0/instances/${a}/`, {});
            assert.equal(d.status, 200);
            assert.equal(d.json.success, true);
            const gone = await call(s, 'GET', `/api/v0/instances/${a}/`, undefined, { query: '?owner=me' });
            assert.deepEqual(gone.json, { instances: null });
            const twice = await call(s, 'DELETE', `/api/v0/instances/${a}/`, {});
            assert.equal(twice.status, 404);
            assert.equal(twice.json.success, false);
            assert.equal(twice.json.error, 'no_such_instance');
            assert.equal((await call(s, 'DELETE', '/api/v0/instances/12345/', {})).json.error, 'no_such_instance');
            assert.deepEqual(await search(s, {}), [11], 'a destroyed instance frees its offer');
            assert.deepEqual((await v1('')).json.instances.map((i) => i.id), [b, c]);
            assert.equal(s.state.maxAlive, 3);
            assert.equal(s.state.alive(), 2);
        } finally {
            await s.stop();
        }
    });

    test('the instance moves on its own clock: null, loading, running', async () => {
        const s = await startVastStandin({ offers: [{ id: 1 }], sshd: false, timing: { created: 50, loading: 50 } });
        try {
            const id = await rent(s, 1);
            const seen = new Set();
            await h.waitFor(
                async () => {
                    const i = await show(s, id);
                    seen.add(i.actual_status);
                    return i.actual_status === 'running';
                },
                { timeoutMs: 10000, what: 'the instance to run' },
            );
            assert.ok([...seen].every((x) => [null, 'loading', 'running'].includes(x)), [...seen].join());
            assert.deepEqual(s.state.errors, []);
        } finally {
            await s.stop();
        }
    });

    test('money: the rate while running, storage from create to destroy (an injected clock)', async () => {
        let t = 1_000_000;
        const s = await startVastStandin({
            offers: [{ id: 1, dph_total: 0.6, storage_cost: 0.72 }],
            manual: true,
            sshd: false,
            now: () => t,
        });
        try {
            const id = await rent(s, 1, { disk: 100 }); // storage: 0.72 * 100 / 720 = $0.10/h
            const inst = await show(s, id);
            assert.equal(inst.start_date, 1000);
            const rate = inst.dph_base;
            assert.equal(inst.dph_total, Math.round((rate + 0.1) * 1e6) / 1e6);
            t += 1800_000;
            await s.advance(id, 'loading');
            assert.equal(s.state.money().gpu, 0, 'no GPU charge before running');
            t += 1800_000;
            await s.advance(id, 'running');
            t += 3600_000;
            let m = s.state.money();
            assert.ok(Math.abs(m.gpu - rate) < 1e-9, `${m.gpu} vs ${rate}`);
            assert.ok(Math.abs(m.storage - 0.2) < 1e-9, `${m.storage}`);
            assert.ok(Math.abs(m.instances[id].running_s - 3600) < 1e-9);
            await call(s, 'DELETE', `/api/v0/instances/${id}/`, {});
            t += 3600_000;
            m = s.state.money();
            assert.ok(Math.abs(m.total - (rate + 0.2)) < 1e-9, 'nothing after destroy');
        } finally {
            await s.stop();
        }
    });
});

describe('machines', { skip: NO_SSHD || false }, () => {
    test('running: ssh by the direct port and the proxy, nvidia-smi, port mapping, onstart; destroy ends it all', async () => {
        const s = await startVastStandin({ offers: [{ ...OFFERS[1], smi_name: 'NVIDIA GeForce RTX 4090' }], manual: true });
        try {
            const key = await call(s, 'POST', '/api/v0/ssh/', { ssh_key: s.clientKey.pub });
            assert.equal(key.status, 200);
            assert.equal(key.json.success, true);
            assert.ok(Number.isInteger(key.json.key.id));
            const cport = await h.freePort(); // loopback: container ports are this host's
            const id = await rent(s, 2, {
                env: { [`-p ${cport}:${cport}`]: '1', GREETING: 'hello' },
                runtype: 'ssh_direc ssh_proxy',
                onstart: 'echo "$GREETING" > "$HOME/onstart.out"',
            });
            assert.equal((await s.advance(id)).actual_status, 'loading');
            assert.equal((await show(s, id)).actual_status, 'loading');
            await s.advance(id);
            const inst = await show(s, id);
            assert.equal(inst.actual_status, 'running');
            assert.deepEqual(Object.keys(inst.ports).sort(), ['22/tcp', `${cport}/tcp`].sort());
            const p22 = inst.ports['22/tcp'][0];
            assert.equal(p22.HostIp, '0.0.0.0');
            assert.match(p22.HostPort, /^\d+$/, 'HostPort is text, as docker gives it');

            // The client's way: public_ipaddr + ports["22/tcp"], else ssh_host:ssh_port.
            const kh = `-o UserKnownHostsFile=${s.knownHosts}`;
            const base = `ssh -F /dev/null ${SSH_OPTS} -i ${s.clientKey.path} -o IdentitiesOnly=yes -o BatchMode=yes ${kh}`;
            const direct = await sh(`${base} -p ${p22.HostPort} root@${inst.public_ipaddr.trim()} echo direct`);
            assert.equal(direct.code, 0, direct.stderr);
            assert.equal(direct.stdout, 'direct\n');
            const proxy = await sh(`${base} -p ${inst.ssh_port} root@${inst.ssh_host} echo proxy`);
            assert.equal(proxy.code, 0, proxy.stderr);
            assert.equal(proxy.stdout, 'proxy\n');

            const smi = await ssh(s, id, SMI_QUERY);
            assert.equal(smi.code, 0, smi.stderr);
            const names = smi.stdout.trim().split('\n').map((l) => l.split(', ')[2]);
            assert.deepEqual(names, ['NVIDIA GeForce RTX 4090', 'NVIDIA GeForce RTX 4090']);
            assert.match(smi.stdout, /, 24564, 0, 24564$/m);

            await h.waitFor(() => fs.existsSync(path.join(s.machine(id).home, 'onstart.out')), { what: 'onstart to run' });
            assert.equal(fs.readFileSync(path.join(s.machine(id).home, 'onstart.out'), 'utf8'), 'hello\n');

            // Something listening on the container port is reached at its HostPort.
            const listener = `require('net').createServer((c) => c.end('engine\\n')).listen(${cport}, '0.0.0.0')`;
            const started = await ssh(s, id, `setsid /usr/bin/node -e "${listener}" </dev/null >/dev/null 2>&1 & echo started`);
            assert.equal(started.code, 0, started.stderr);
            const hostPort = Number(inst.ports[`${cport}/tcp`][0].HostPort);
            await h.waitFor(async () => (await readFrom('127.0.0.1', hostPort)).data === 'engine\n', {
                what: 'the mapped port to answer',
            });
            const token = s.machine(id).token;
            const sshdPid = s.machine(id).sshd.proc.pid;
            assert.ok(h.processesMatching(token).length > 0, 'the listener carries the machine token');

            const d = await call(s, 'DELETE', `/api/v0/instances/${id}/`, {});
            assert.deepEqual(d.json, { success: true, msg: 'Instance destroyed successfully' });
            assert.equal(h.pidAlive(sshdPid), false);
            await h.waitFor(() => h.processesMatching(token).length === 0, { what: 'the machine processes to end' });
            assert.notEqual((await readFrom('127.0.0.1', hostPort)).data, 'engine\n');
            const after = await sh(`${base} -p ${inst.ssh_port} root@${inst.ssh_host} true`);
            assert.notEqual(after.code, 0);
            assert.deepEqual(s.state.errors, []);
        } finally {
            await s.stop();
        }
    });

    test('a key not on the account logs in only once attached to the instance', async () => {
        const s = await startVastStandin({ offers: [{ id: 1 }], manual: true });
        try {
            const id = await rent(s, 1, { runtype: 'ssh' });
            await s.advance(id, 'running');
            assert.deepEqual((await show(s, id)).ports, {}, 'runtype ssh: the proxy only');
            const before = await ssh(s, id, 'true', { via: 'proxy' });
            assert.equal(before.code, 255);
            assert.match(before.stderr, /Permission denied/);
            const bad = await call(s, 'POST', `/api/v0/instances/${id}/ssh/`, { ssh_key: 'not a key' });
            assert.equal(bad.status, 400);
            const unknown = await call(s, 'POST', '/api/v0/instances/999/ssh/', { ssh_key: s.clientKey.pub });
            assert.equal(unknown.status, 404);
            assert.equal(unknown.json.error, 'no_such_instance');
            const r = await call(s, 'POST', `/api/v0/instances/${id}/ssh/`, { ssh_key: s.clientKey.pub });
            assert.deepEqual(r.json, { success: true, msg: 'SSH key attached successfully' });
            const now = await ssh(s, id, 'echo in', { via: 'proxy' });
            assert.equal(now.code, 0, now.stderr);
            assert.equal(now.stdout, 'in\n');
        } finally {
            await s.stop();
        }
    });
});

describe('faults', () => {
    test('429 bursts with the plain-text body, 5xx, any status', async () => {
        const s = await startVastStandin({ offers: OFFERS, sshd: false });
        try {
            await s.script({ kind: 'rate_limit', path: '/api/v0/bundles/', times: 2 });
            for (let i = 0; i < 2; i++) {
                const r = await call(s, 'POST', '/api/v0/bundles/', {});
                assert.equal(r.status, 429);
                assert.equal(r.text, 'API requests too frequent');
                assert.match(r.type, /^text\/plain/);
                assert.equal(r.headers.get('retry-after'), null);
            }
            assert.equal((await call(s, 'POST', '/api/v0/bundles/', {})).status, 200);
            await s.script({ kind: 'rate_limit', method: 'PUT', threshold: 4.5 });
            assert.equal((await call(s, 'POST', '/api/v0/bundles/', {})).status, 200, 'another method');
            const t = await call(s, 'PUT', '/api/v0/asks/1/', { image: 'x' });
            assert.equal(t.status, 429);
            assert.equal(t.text, 'API requests too frequent: endpoint threshold=4.5');
            assert.deepEqual(await search(s, {}), [1, 2, 3], 'the refused create rented nothing');

            await s.script(
                { kind: 'server_error', status: 502 },
                { kind: 'server_error', status: 500, body: { error: 'server_error', msg: 'failed to schedule container' } },
                { kind: 'http', status: 403, body: 'Forbidden', contentType: 'text/plain' },
            );
            const e502 = await call(s, 'GET', '/api/v0/instances/');
            assert.equal(e502.status, 502);
            assert.match(e502.text, /502 Bad Gateway/);
            const e500 = await call(s, 'GET', '/api/v0/instances/');
            assert.equal(e500.status, 500);
            assert.deepEqual(e500.json, { error: 'server_error', msg: 'failed to schedule container' });
            const e403 = await call(s, 'GET', '/api/v0/instances/');
            assert.equal(e403.status, 403);
            assert.equal(e403.text, 'Forbidden');
            assert.equal((await call(s, 'GET', '/api/v0/instances/')).status, 200);
            await assert.rejects(s.script({ kind: 'meteor' }), /unknown fault kind/);
        } finally {
            await s.stop();
        }
    });

    test('an offer gone at create; a create that fails but returns a contract', async () => {
        const s = await startVastStandin({ offers: [...OFFERS, { id: 4, dph_total: 0.4 }], manual: true, sshd: false });
        try {
            assert.deepEqual(await search(s, {}), [1, 2, 3, 4]);
            await s.script({ kind: 'offer_gone', offer: 1 }, { kind: 'offer_gone', offer: 2, status: 404 });
            assert.deepEqual(await search(s, {}), [1, 2, 3, 4], 'still listed: the search lags');
            const g = await call(s, 'PUT', '/api/v0/asks/1/', { image: 'x' });
            assert.equal(g.status, 410);
            assert.equal(g.json.error, 'no_such_ask');
            const g2 = await call(s, 'PUT', '/api/v0/asks/2/', { image: 'x' });
            assert.equal(g2.status, 404);
            assert.match(g2.json.msg, /no_such_ask/);
            assert.deepEqual(await search(s, {}), [3, 4]);
            assert.deepEqual((await call(s, 'GET', '/api/v0/instances/')).json.instances, []);

            // Scripted: the failure names the instance it left behind, which is stopped.
            await s.script({ kind: 'create_fails', offer: 3, status: 400 });
            const f = await call(s, 'PUT', '/api/v0/asks/3/', { image: 'x' });
            assert.equal(f.status, 400);
            assert.equal(f.json.success, false);
            assert.ok(Number.isInteger(f.json.new_contract));
            const left = await show(s, f.json.new_contract);
            assert.equal(left.cur_state, 'stopped');
            assert.equal(left.intended_status, 'stopped');
            assert.equal(left.next_state, 'stopped');
            await assert.rejects(s.advance(f.json.new_contract), /stays/);
            assert.equal((await call(s, 'DELETE', `/api/v0/instances/${f.json.new_contract}/`, {})).status, 200);

            // Natural: a bid under min_bid (0.2 for a $0.40 offer).
            const low = await call(s, 'PUT', '/api/v0/asks/4/', { image: 'x', price: 0.1 });
            assert.equal(low.status, 200);
            assert.equal(low.json.success, false);
            assert.equal((await show(s, low.json.new_contract)).is_bid, true);
            await call(s, 'DELETE', `/api/v0/instances/${low.json.new_contract}/`, {});
            const fair = await call(s, 'PUT', '/api/v0/asks/4/', { image: 'x', price: 0.25 });
            assert.equal(fair.json.success, true);
            const bid = await show(s, fair.json.new_contract);
            assert.equal(bid.is_bid, true);
            assert.equal(bid.dph_total, 0.25);
        } finally {
            await s.stop();
        }
    });

    test('stuck in loading, exited, an OCI error', async () => {
        const s = await startVastStandin({
            offers: [{ id: 1, machine_id: 7 }, { id: 2 }, { id: 3 }, { id: 4 }],
            manual: true,
            sshd: false,
        });
        try {
            await s.script(
                { kind: 'stuck_loading', machine: 7 },
                { kind: 'exited', offer: 2 },
                { kind: 'oci_error', offer: 3 },
                { kind: 'exited', offer: 4, after: 'running' },
            );
            const stuck = await rent(s, 1);
            assert.equal((await s.advance(stuck)).actual_status, 'loading');
            await assert.rejects(s.advance(stuck), /stays 'loading'/);

            const exited = await rent(s, 2);
            await s.advance(exited, 'exited');
            const e = await show(s, exited);
            assert.equal(e.actual_status, 'exited');
            assert.equal(e.intended_status, 'running');

            const oci = await rent(s, 3);
            await s.advance(oci);
            const o = await show(s, oci);
            assert.equal(o.actual_status, 'created');
            assert.ok(o.status_msg.includes(': OCI runtime create failed:'), o.status_msg);
            assert.equal(o.status_msg, OCI_MSG);

            const late = await rent(s, 4);
            await s.advance(late, 'running');
            assert.equal((await s.advance(late)).actual_status, 'exited');
            assert.deepEqual(Object.keys((await show(s, late)).ports), [], 'runtype ssh maps nothing');
        } finally {
            await s.stop();
        }
    });

    test('SSH that never answers, or is refused', { skip: NO_SSHD || false }, async () => {
        const s = await startVastStandin({ offers: [{ id: 1 }, { id: 2 }], manual: true });
        try {
            await call(s, 'POST', '/api/v0/ssh/', { ssh_key: s.clientKey.pub });
            await s.script({ kind: 'ssh_dead', offer: 1 }, { kind: 'ssh_dead', offer: 2, mode: 'refuse' });
            const hang = await rent(s, 1, { runtype: 'ssh_direc ssh_proxy' });
            await s.advance(hang, 'running');
            assert.equal(s.machine(hang).sshd, null);
            const r = await sh(`${s.sshCommand(hang).replace('ssh ', 'ssh -o ConnectTimeout=2 ')} true`);
            assert.equal(r.code, 255);
            assert.match(r.stderr, /banner exchange|timed out/i, r.stderr);
            const refused = await rent(s, 2, { runtype: 'ssh_direc ssh_proxy' });
            const inst = await s.advance(refused, 'running');
            assert.equal((await readFrom('127.0.0.1', inst.ssh_port)).error, 'ECONNREFUSED');
            assert.equal((await readFrom('127.0.0.1', Number(inst.ports['22/tcp'][0].HostPort))).error, 'ECONNREFUSED');
        } finally {
            await s.stop();
        }
    });

    test('missing GPUs: fewer, none, no driver', { skip: NO_SSHD || false }, async () => {
        const s = await startVastStandin({ offers: [{ id: 1, num_gpus: 4 }, { id: 2, num_gpus: 2 }, { id: 3 }], manual: true });
        try {
            await call(s, 'POST', '/api/v0/ssh/', { ssh_key: s.clientKey.pub });
            await s.script(
                { kind: 'missing_gpus', offer: 1, gpus: 3 },
                { kind: 'missing_gpus', offer: 2, gpus: 'none' },
                { kind: 'missing_gpus', offer: 3, gpus: 'no_driver' },
            );
            const q = SMI_QUERY;
            const ids = [await rent(s, 1), await rent(s, 2), await rent(s, 3)];
            for (const id of ids) await s.advance(id, 'running');
            const three = await ssh(s, ids[0], q, { via: 'proxy' });
            assert.equal(three.code, 0, three.stderr);
            assert.equal(three.stdout.trim().split('\n').length, 3);
            assert.equal((await show(s, ids[0])).num_gpus, 4, 'the API still promises 4');
            const none = await ssh(s, ids[1], q, { via: 'proxy' });
            assert.equal(none.code, 6);
            assert.match(none.stdout, /No devices were found/);
            const noDriver = await ssh(s, ids[2], q, { via: 'proxy' });
            assert.equal(noDriver.code, 9);
        } finally {
            await s.stop();
        }
    });

    test('outbid: an interruptible instance stopped by the market', async () => {
        let t = 0;
        const s = await startVastStandin({ offers: [{ id: 1, dph_total: 0.4 }, { id: 2 }], manual: true, now: () => t, sshd: !NO_SSHD });
        try {
            const id = await rent(s, 1, { price: 0.3, runtype: 'ssh_direc ssh_proxy' });
            await s.advance(id, 'running');
            const sshdPid = s.machine(id).sshd?.proc.pid;
            t += 3600_000;
            await s.script({ kind: 'outbid', instance: id });
            const i = await show(s, id);
            const states = [i.actual_status, i.cur_state, i.intended_status, i.next_state];
            assert.deepEqual(states, ['stopped', 'stopped', 'stopped', 'stopped']);
            if (sshdPid) assert.equal(h.pidAlive(sshdPid), false, 'the container stopped');
            t += 3600_000;
            assert.ok(Math.abs(s.state.money().gpu - 0.3) < 1e-9, 'billed at the bid, only while running');
            const onDemand = await rent(s, 2);
            await assert.rejects(s.outbid(onDemand), /on-demand/);
        } finally {
            await s.stop();
        }
    });

    test('exited while running: the machine stops', { skip: NO_SSHD || false }, async () => {
        const s = await startVastStandin({ offers: [{ id: 1 }], manual: true });
        try {
            const id = await rent(s, 1, { runtype: 'ssh_direc ssh_proxy' });
            await s.advance(id, 'running');
            const pid = s.machine(id).sshd.proc.pid;
            await s.script({ kind: 'exited', instance: id });
            assert.equal((await show(s, id)).actual_status, 'exited');
            assert.equal(h.pidAlive(pid), false);
            assert.ok((await show(s, id)).ports['22/tcp'], 'a stopped container keeps its last mapping');
        } finally {
            await s.stop();
        }
    });
});

describe('network namespaces', { skip: NO_NETNS || false }, () => {
    test('each machine is a namespace with its own address; the same container port on two machines', async () => {
        const s = await startVastStandin({ offers: [{ id: 1 }, { id: 2 }], manual: true, netns: true });
        const ids = [];
        try {
            await call(s, 'POST', '/api/v0/ssh/', { ssh_key: s.clientKey.pub });
            for (const offer of [1, 2]) {
                const id = await rent(s, offer, { env: { '-p 8000:8000': '1' }, runtype: 'ssh_direc ssh_proxy' });
                await s.advance(id, 'running');
                ids.push(id);
            }
            const namespaces = ids.map((id) => s.machine(id).ns);
            const listed = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
            for (const ns of namespaces) assert.ok(listed.includes(ns), ns);
            const addrs = [];
            for (const [n, id] of ids.entries()) {
                const inst = await show(s, id);
                const pub = inst.public_ipaddr.trim();
                assert.match(pub, /^10\.\d+\.\d+\.\d+$/);
                addrs.push(pub);
                const direct = await ssh(s, id, 'ip -4 -o addr show scope global');
                assert.equal(direct.code, 0, direct.stderr);
                assert.ok(direct.stdout.includes(s.machine(id).addr), direct.stdout);
                const viaProxy = await ssh(s, id, 'echo proxy', { via: 'proxy' });
                assert.equal(viaProxy.stdout, 'proxy\n', viaProxy.stderr);
                const listener = `require('net').createServer((c) => c.end('machine ${n}\\n')).listen(8000, '0.0.0.0')`;
                const started = await ssh(s, id, `setsid /usr/bin/node -e "${listener}" </dev/null >/dev/null 2>&1 & echo ok`);
                assert.equal(started.code, 0, started.stderr);
            }
            assert.notEqual(addrs[0], addrs[1]);
            for (const [n, id] of ids.entries()) {
                const inst = await show(s, id);
                const port = Number(inst.ports['8000/tcp'][0].HostPort);
                await h.waitFor(async () => (await readFrom(inst.public_ipaddr.trim(), port)).data === `machine ${n}\n`, {
                    what: `machine ${n}'s port 8000`,
                });
            }
            await call(s, 'DELETE', `/api/v0/instances/${ids[0]}/`, {});
            assert.ok(!spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.includes(namespaces[0]));
            await s.stop();
            const after = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
            for (const ns of namespaces) assert.ok(!after.includes(ns), `${ns} left`);
            // the kernel destroys a veth whose peer's namespace went in its own time: wait for it
            const hostIfs = ids.map((id) => `${s.machine(id).hostIf}@`);
            await h.waitFor(
                () => {
                    const links = spawnSync('ip', ['-o', 'link'], { encoding: 'utf8' }).stdout;
                    return hostIfs.every((i) => !links.includes(i));
                },
                { what: `the machines' veth links (${hostIfs.join(', ')}) gone` },
            );
            assert.deepEqual(s.state.errors, []);
        } finally {
            await s.stop();
        }
    });
});
