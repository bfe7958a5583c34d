// A stand-in of the Vast.ai REST API for the cloud tests: an HTTP server on
// 127.0.0.1 that answers the calls a provisioning client makes, with the request
// and response shapes of the real API (docs/vast.md has them, with where each was
// read), and whose rented "machines" are real sshd processes (lib/sshd.mjs), on
// loopback or each in a network namespace of its own with its own address.
//
// What it imitates:
//   - auth: `Authorization: Bearer KEY` or `?api_key=KEY`; anything else is a 401
//     with {"success": false, "error": "auth_error", "msg": "Invalid user key"}.
//   - POST /api/v0/bundles/ (flat query body) and PUT /api/v0/search/asks/ ({"q": ...}):
//     filters {field: {op: value}} with eq neq gt gte lt lte in notin (numbers sent
//     as strings compare as numbers; gpu_name matches exactly, spaces and all;
//     geolocation also matches its two-letter country code), `order` [[field,
//     asc|desc]], `limit`, `type`, `allocated_storage` (prices dph_total when the
//     offer has a storage_cost). Answer {"offers": [...]}. A rented offer is gone
//     from the search until its instance is destroyed; one scripted as taken by
//     someone else stays listed until a create on it was refused.
//   - PUT /api/v0/asks/{id}/: {"success": true, "new_contract": ID}; an offer taken
//     since the search 410 no_such_ask, an id never offered 404; a `price` (bid) under
//     the offer's min_bid leaves a stopped instance and answers success false with
//     new_contract. `env` is an object: "-p C:C" keys are mapped to random public
//     ports (as many as the offer's direct_port_count); other keys go to `onstart`'s
//     environment and `extra_env`. runtype "ssh_direc ..."/"ssh_direct" maps 22/tcp too.
//   - GET /api/v0/instances/{id}/ ({"instances": {...}} or {"instances": null}),
//     GET /api/v0/instances/ (the old list) and GET /api/v1/instances/ (select_filters,
//     order_by, limit <= 25, after_token/next_token), PUT /api/v0/instances/{id}/
//     with {"label"}, DELETE /api/v0/instances/{id}/ (404 no_such_instance when
//     unknown), POST /api/v0/instances/{id}/ssh/ and POST /api/v0/ssh/ ({"ssh_key"}).
//   - public_ipaddr comes with a trailing newline: the clients that read it (vast-cli,
//     dstack) strip it, so a client must too.
//   - the instance lifecycle: actual_status null -> loading -> running (cur_state,
//     intended_status and next_state "running"), on short real timers or, with
//     `manual: true`, only when the test calls advance(). Running starts the machine:
//     sshd (container port 22), the public port forwards, the proxy endpoint
//     ssh_host:ssh_port, and `onstart`. Every key registered on the account before the
//     create, or attached to the instance, logs in as root; each session has the
//     machine's HOME, a PATH with tests/e2e/fixtures first (its nvidia-smi) and
//     YARD_FAKE_GPUS listing the offer's GPUs (num_gpus x gpu_name, gpu_ram MiB).
//   - money: dph (the bid for an interruptible instance) while `running`, storage
//     (storage_cost $/GB/month x disk, a month being 720 h) from create to destroy.
//   - stamps (for bench/lib/cloud.mjs): each instance's `stamps` holds, in
//     CLOCK_MONOTONIC ns, its first entry into each actual_status (`entered`), the
//     first GET of it answered with each (`answered`) and its first DELETE.
//
// Scripted faults (script()): 429 bursts with the plain-text body, 5xx, any status
// and body, an offer gone at create, a create that fails but returns a contract,
// stuck in loading, exited, an OCI error in status_msg, SSH that never answers,
// missing GPUs, outbid (an interruptible instance stopped by the market).
//
// What it leaves out: templates, volumes, stop/start/reboot of instances, logs and
// execute, account key listing and removal, bundles of several GPUs of one machine
// (each offer is one rentable unit), the real limits' timing (429 only when
// scripted), billing beyond the two rates above, and per-request rate identities.
// In loopback mode every machine shares 127.0.0.1: container ports of two machines
// collide, so tests there use free ports; in namespace mode (`netns: true`, root)
// each instance is a namespace with its own 10.x address, public_ipaddr being the
// host side of its veth pair (two instances of one machine_id get two addresses).

import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as h from './harness.mjs';
import { startSshd, sshdSkipReason } from './sshd.mjs';

export const FIXTURES = path.join(h.YARD_SRC_DIR, 'tests', 'e2e', 'fixtures');

/** The status_msg of a container the runtime could not create (dstack's check). */
export const OCI_MSG =
    'Error response from daemon: failed to create task for container: failed to create shim ' +
    'task: OCI runtime create failed: runc create failed: unable to start container process: ' +
    'error during container init: error running hook #0: error running hook: exit status 1, ' +
    'stdout: , stderr: Auto-detected mode as legacy\nnvidia-container-cli: initialization ' +
    'error: nvml error: driver/library version mismatch: unknown';

const RATE_LIMIT_TEXT = 'API requests too frequent';
const OPS = new Set(['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'in', 'notin']);
const SEARCH_KEYS = new Set(['order', 'type', 'limit', 'allocated_storage', 'disable_bundling']);
const SEARCH_TYPES = new Set(['on-demand', 'bid', 'reserved']);
// Offer keys the test may set that the API never shows.
const STANDIN_ONLY = new Set(['smi_name', 'machine_env']);

// Namespace mode: names carry this process's pid, so leftovers of a run that died
// are recognised (and removed) by the next.
const NS_PREFIX = 'yvast-';
const liveNamespaces = new Set();

function run(cmd, args) {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) {
        throw new Error(`${cmd} ${args.join(' ')} failed: ${(r.stderr || r.error || '').toString().trim()}`);
    }
    return r.stdout;
}

function deleteNamespace(ns) {
    const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
    for (const pid of (r.stdout || '').split(/\s+/).filter(Boolean)) {
        try {
            process.kill(Number(pid), 'SIGKILL');
        } catch {
            // gone
        }
    }
    spawnSync('ip', ['netns', 'del', ns]);
    liveNamespaces.delete(ns);
}

const liveStandins = new Set();

// A test stops its stand-in itself (before the harness looks for leftovers); these
// are the backstops for one that did not, or a run that died.
h.atEnd(async () => {
    for (const s of [...liveStandins]) await s.stop();
});
process.on('exit', () => {
    for (const ns of [...liveNamespaces]) deleteNamespace(ns);
});

/** Why the namespace mode cannot run here, or null. */
export function netnsSkipReason() {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'not running as root';
    const probe = `${NS_PREFIX}probe-${process.pid}`;
    const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
    if (r.error) return "'ip' (iproute2) not installed";
    if (r.status !== 0) return `cannot make a network namespace: ${r.stderr.trim()}`;
    spawnSync('ip', ['netns', 'del', probe]);
    return null;
}

/** Removes namespaces left by runs whose process is gone. */
function removeStaleNamespaces() {
    const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const line of (r.stdout || '').split('\n')) {
        const m = /^(yvast-(?:probe-)?(\d+)(?:-\d+)?)\b/.exec(line.trim());
        if (m && !h.pidAlive(Number(m[2]))) deleteNamespace(m[1]);
    }
}

function hostAddresses() {
    const r = spawnSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' });
    return new Set([...(r.stdout || '').matchAll(/inet (\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1]));
}

let nsCounter = 0;

/** A namespace with a veth pair: { ns, hostIf, hostAddr, addr }. */
function makeNamespace() {
    const used = hostAddresses();
    const second = 200 + (process.pid % 50);
    let n;
    let hostAddr;
    let addr;
    for (;;) {
        n = nsCounter++;
        if (n >= 64 * 256) throw new Error('vast stand-in: out of namespace addresses');
        const third = Math.floor(n / 64);
        const fourth = (n % 64) * 4;
        hostAddr = `10.${second}.${third}.${fourth + 1}`;
        addr = `10.${second}.${third}.${fourth + 2}`;
        if (!used.has(hostAddr) && !used.has(addr)) break;
    }
    const ns = `${NS_PREFIX}${process.pid}-${n}`;
    const tag = `yv${process.pid % 100000}`;
    const hostIf = `${tag}h${n}`;
    const nsIf = `${tag}n${n}`;
    run('ip', ['netns', 'add', ns]);
    liveNamespaces.add(ns);
    try {
        run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
        run('ip', ['link', 'set', nsIf, 'netns', ns]);
        run('ip', ['addr', 'add', `${hostAddr}/30`, 'dev', hostIf]);
        run('ip', ['link', 'set', hostIf, 'up']);
        run('ip', ['-n', ns, 'addr', 'add', `${addr}/30`, 'dev', nsIf]);
        run('ip', ['-n', ns, 'link', 'set', nsIf, 'up']);
        run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    } catch (err) {
        spawnSync('ip', ['link', 'del', hostIf]);
        deleteNamespace(ns);
        throw err;
    }
    return { ns, hostIf, hostAddr, addr };
}

/** Every live descendant of pid. */
function descendants(pid) {
    const out = [];
    const queue = [pid];
    while (queue.length) {
        for (const c of h.childrenOf(queue.shift())) {
            out.push(c);
            queue.push(c);
        }
    }
    return out;
}

// ---------------------------------------------------------------- TCP forwards

/**
 * A listener on host:0 that passes each connection to target(): {host, port} to
 * forward to, 'hang' to accept and never answer, or null to close at once.
 */
function startForward(host, target) {
    const sockets = new Set();
    const server = net.createServer((client) => {
        sockets.add(client);
        client.on('close', () => sockets.delete(client));
        client.on('error', () => {});
        const t = target();
        if (t === 'hang') return;
        if (!t) {
            client.destroy();
            return;
        }
        const upstream = net.connect(t.port, t.host);
        sockets.add(upstream);
        upstream.on('close', () => {
            sockets.delete(upstream);
            client.destroy();
        });
        upstream.on('error', () => client.destroy());
        client.on('close', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, host, () => {
            resolve({
                port: server.address().port,
                /** Closes the live connections, keeping the listener. */
                drop() {
                    for (const s of sockets) s.destroy();
                },
                close() {
                    for (const s of sockets) s.destroy();
                    return new Promise((r) => server.close(() => r()));
                },
            });
        });
    });
}

// ---------------------------------------------------------------- values

function round(x, digits = 6) {
    const f = 10 ** digits;
    return Math.round(x * f) / f;
}

function countryOf(geo) {
    const m = /(?:^|,\s*)([A-Z]{2})$/.exec(String(geo ?? ''));
    return m ? m[1] : null;
}

/** A query value as the offer's type compares it (the CLI sends numbers as text). */
function coerce(offerValue, v) {
    if (typeof offerValue === 'number' && typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) {
        return Number(v);
    }
    if (typeof offerValue === 'boolean' && (v === 'true' || v === 'false')) return v === 'true';
    return v;
}

function equal(field, have, want) {
    want = coerce(have, want);
    if (have === want) return true;
    return field === 'geolocation' && typeof want === 'string' && countryOf(have) === want;
}

function compare(have, op, want, field) {
    if (op === 'in' || op === 'notin') {
        const hit = want.some((w) => equal(field, have, w));
        return op === 'in' ? hit : !hit;
    }
    if (op === 'eq') return equal(field, have, want);
    if (op === 'neq') return !equal(field, have, want);
    want = coerce(have, want);
    if (have === null || have === undefined || want === null || want === undefined) return false;
    if (op === 'gt') return have > want;
    if (op === 'gte') return have >= want;
    if (op === 'lt') return have < want;
    return have <= want;
}

class ApiError extends Error {
    constructor(status, body) {
        super(typeof body === 'string' ? body : JSON.stringify(body));
        this.status = status;
        this.body = body;
    }
}

const invalidArgs = (msg) => new ApiError(400, { success: false, error: 'invalid_args', msg });

// The two answers for an offer that cannot be rented (the docs' examples).
const notAvailable = (askId) =>
    new ApiError(404, {
        success: false,
        error: 'invalid_args',
        msg: `error 404/3603: no_such_ask Instance type by id ${askId} is not available.`,
        ask_id: askId,
    });
const noLongerAvailable = (askId) =>
    new ApiError(410, {
        success: false,
        error: 'no_such_ask',
        msg: `error 410/3907: no_such_ask Instance type ${askId} is no longer available.`,
        ask_id: askId,
    });
const noSuchInstance = (id) =>
    new ApiError(404, { success: false, error: 'no_such_instance', msg: `Instance ${id} not found.` });

/** Checks a filter set {field: {op: value}}; returns [[field, op, value]]. */
function parseFilters(q, skip) {
    const out = [];
    for (const [field, cond] of Object.entries(q)) {
        if (skip.has(field)) continue;
        if (!cond || typeof cond !== 'object' || Array.isArray(cond)) {
            throw invalidArgs(`filter '${field}' must be an object {op: value}`);
        }
        for (const [op, v] of Object.entries(cond)) {
            if (!OPS.has(op)) throw invalidArgs(`unknown operator '${op}' for '${field}'`);
            if ((op === 'in' || op === 'notin') && !Array.isArray(v)) {
                throw invalidArgs(`operator '${op}' of '${field}' takes a list`);
            }
            out.push([field, op, v]);
        }
    }
    return out;
}

function sortRows(rows, order) {
    const keys = order.map(([f, d]) => [f, d === 'desc' ? -1 : 1]);
    return rows.sort((a, b) => {
        for (const [f, sign] of keys) {
            const x = a[f];
            const y = b[f];
            if (x === y) continue;
            if (x === null || x === undefined) return 1;
            if (y === null || y === undefined) return -1;
            return (x < y ? -1 : 1) * sign;
        }
        return 0;
    });
}

// ---------------------------------------------------------------- offers

let offerSeq = 4000001;
let machineSeq = 10001;
let hostSeq = 201;

function makeOffer(o) {
    const id = o.id ?? offerSeq++;
    const machineId = o.machine_id ?? machineSeq++;
    const numGpus = o.num_gpus ?? 1;
    const gpuRam = o.gpu_ram ?? 24564;
    const dphTotal = o.dph_total ?? 0.4;
    const storageCost = o.storage_cost ?? 0;
    const reliability = o.reliability2 ?? o.reliability ?? 0.995;
    const verified = o.verified ?? true;
    const offer = {
        id,
        ask_contract_id: id,
        bundle_id: id,
        machine_id: machineId,
        host_id: o.host_id ?? hostSeq++,
        gpu_name: 'RTX 4090',
        num_gpus: numGpus,
        gpu_ram: gpuRam,
        gpu_total_ram: gpuRam * numGpus,
        gpu_frac: 1,
        gpu_arch: 'nvidia',
        compute_cap: 890,
        cuda_max_good: 12.8,
        driver_version: '570.124.04',
        cpu_name: 'AMD EPYC 7543 32-Core Processor',
        cpu_cores: 64,
        cpu_cores_effective: 16,
        cpu_ram: 128000,
        cpu_arch: 'amd64',
        disk_space: 500,
        disk_bw: 2000,
        inet_up: 500,
        inet_down: 900,
        direct_port_count: 20,
        dph_base: round(dphTotal - (storageCost * 8) / 720),
        dph_total: dphTotal,
        min_bid: round(dphTotal * 0.5, 4),
        storage_cost: storageCost,
        score: 100,
        dlperf: 80,
        reliability,
        reliability2: reliability,
        verified,
        verification: verified ? 'verified' : 'unverified',
        rentable: true,
        rented: false,
        is_bid: false,
        external: false,
        datacenter: false,
        hosting_type: 0,
        static_ip: true,
        geolocation: 'Oregon, US',
        public_ipaddr: '127.0.0.1',
        ...o,
    };
    offer.id = id;
    offer.machine_id = machineId;
    if (o.dph_base !== undefined) offer.dph_base = o.dph_base;
    return offer;
}

/** The offer as the search shows it, priced at allocated_storage GB. */
function offerView(offer, allocated) {
    const out = {};
    for (const [k, v] of Object.entries(offer)) if (!STANDIN_ONLY.has(k)) out[k] = v;
    if (offer.storage_cost > 0) out.dph_total = round(offer.dph_base + (offer.storage_cost * allocated) / 720);
    return out;
}

// ---------------------------------------------------------------- the stand-in

/**
 * Starts the stand-in. opts:
 *   apiKey      the key it takes (default: a random one)
 *   offers      [{...}]: offers with the API's field names; unnamed fields get
 *               realistic defaults (see makeOffer). `smi_name` (stand-in only): the
 *               GPU name the machine's nvidia-smi prints (default "NVIDIA <gpu_name>").
 *               `machine_env` (stand-in only): extra variables for every ssh session on
 *               the machines of that offer (MOCK_ENGINE_FAIL: a machine whose driver fails).
 *   manual      true: an instance moves only when the test calls advance(id)
 *   timing      {created, loading, running} ms each phase lasts when not manual
 *               (running: before a scripted `exited` after running); default 100/200/300
 *   netns       true: each instance in its own network namespace (root; see netnsSkipReason)
 *   sshd        false: machines run no sshd at all (where sshd is not installed)
 *   accountKeys public keys registered on the account before the start
 *   machineEnv  extra variables for every ssh session on every machine
 *   now         () => ms, the clock of start_date, duration and money (default Date.now)
 *   onCreate    async (instance id) => {...}: awaited after a create made its instance
 *               and before it answers (a test kills its client meanwhile)
 *
 * Returns { url, apiKey, dir, state, stop(), script(...faults), addOffer(o),
 * instance(id), advance(id, status?), outbid(id), sshCommand(id, {via, key}),
 * clientKey: {path, pub}, knownHosts }. url has no trailing slash: the API's paths
 * follow it (`${url}/api/v0/bundles/`).
 */
export async function startVastStandin(opts = {}) {
    const apiKey = opts.apiKey ?? crypto.randomBytes(32).toString('hex');
    const timing = { created: 100, loading: 200, running: 300, ...(opts.timing || {}) };
    const now = opts.now ?? (() => Date.now());
    const useNetns = !!opts.netns;
    if (useNetns) {
        const why = netnsSkipReason();
        if (why) throw new Error(`vast stand-in: namespace mode unavailable: ${why}`);
        removeStaleNamespaces();
    }
    const withSshd = opts.sshd !== false && !sshdSkipReason();
    const dir = h.tmpdir('yard-vast-');
    const knownHosts = path.join(dir, 'known_hosts');
    fs.writeFileSync(knownHosts, '');

    // A key pair for the test's own logins; it logs in only once registered.
    let clientKey = null;
    if (spawnSync('sh', ['-c', 'command -v ssh-keygen']).status === 0) {
        const keyPath = path.join(dir, 'client_key');
        const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vast-standin', '-f', keyPath]);
        if (r.status === 0) clientKey = { path: keyPath, pub: fs.readFileSync(`${keyPath}.pub`, 'utf8').trim() };
    }

    const offers = new Map(); // id -> offer (API fields)
    // Offers taken by "someone else": id -> {status: 404 | 410, refused}. Still listed
    // (the search lags) until a create on them has been refused.
    const gone = new Map();
    const instances = new Map(); // id -> internal record
    const faults = [];
    const pending = new Set(); // offer ids being rented right now
    let instanceSeq = 26000001;
    let accountKeySeq = 501;
    const state = {
        offers,
        instances,
        requests: [],
        accountKeys: (opts.accountKeys || []).map((k) => ({ id: accountKeySeq++, public_key: k })),
        errors: [],
        ignoredFilters: new Set(),
        maxAlive: 0,
        /** Live instances (not destroyed). */
        alive() {
            return [...instances.values()].filter((i) => !i.destroyed).length;
        },
        /** What was billed so far: {total, gpu, storage, instances: {id: {...}}}. */
        money() {
            const out = { total: 0, gpu: 0, storage: 0, instances: {} };
            const t = now();
            for (const inst of instances.values()) {
                const end = inst.destroyedAt ?? t;
                const runningMs = inst.runningMs + (inst.runningSince !== null ? end - inst.runningSince : 0);
                const gpu = (inst.rate * runningMs) / 3600000;
                const storage = (((inst.offer.storage_cost * inst.disk) / 720) * (end - inst.createdAt)) / 3600000;
                out.instances[inst.id] = { rate: inst.rate, running_s: runningMs / 1000, gpu, storage, total: gpu + storage };
                out.gpu += gpu;
                out.storage += storage;
            }
            out.total = out.gpu + out.storage;
            return out;
        },
    };

    const addOffer = (o) => {
        const offer = makeOffer(o);
        offers.set(offer.id, offer);
        return offer;
    };
    for (const o of opts.offers || []) addOffer(o);

    // ------------------------------------------------------------ faults

    const HTTP_KINDS = new Set(['rate_limit', 'server_error', 'http']);
    const LIFE_KINDS = new Set(['stuck_loading', 'exited', 'oci_error', 'ssh_dead', 'missing_gpus']);
    async function script(...list) {
        for (const f of list) {
            if (!f || typeof f.kind !== 'string') throw new Error('vast stand-in: a fault needs a kind');
            if (HTTP_KINDS.has(f.kind)) {
                faults.push({ times: 1, ...f });
            } else if (f.kind === 'offer_gone') {
                if (!offers.has(f.offer)) throw new Error(`vast stand-in: offer_gone: no offer ${f.offer}`);
                const status = f.status ?? 410;
                if (status !== 410 && status !== 404) throw new Error('vast stand-in: offer_gone status is 410 or 404');
                gone.set(f.offer, { status, refused: false });
            } else if (f.kind === 'create_fails') {
                faults.push({ times: 1, status: 200, ...f });
            } else if (f.kind === 'outbid') {
                await outbid(f.instance);
            } else if (LIFE_KINDS.has(f.kind)) {
                if (f.instance !== undefined) {
                    if (f.kind !== 'exited') throw new Error(`vast stand-in: ${f.kind} applies to an offer or machine`);
                    await exitNow(f.instance);
                } else if (f.offer === undefined && f.machine === undefined) {
                    throw new Error(`vast stand-in: ${f.kind} needs an offer, a machine or an instance`);
                } else {
                    faults.push({ times: Infinity, ...f });
                }
            } else {
                throw new Error(`vast stand-in: unknown fault kind '${f.kind}'`);
            }
        }
    }

    function takeFault(pred) {
        const f = faults.find((x) => x.times > 0 && pred(x));
        if (f) f.times -= 1;
        return f;
    }

    const pathMatches = (f, method, p) =>
        (!f.method || f.method.toUpperCase() === method) &&
        (!f.path || (f.path instanceof RegExp ? f.path.test(p) : p.startsWith(f.path)));

    function lifeFaults(offer) {
        const out = {};
        for (const f of faults) {
            if (!LIFE_KINDS.has(f.kind) || f.times <= 0) continue;
            if (f.offer !== undefined && f.offer !== offer.id) continue;
            if (f.machine !== undefined && f.machine !== offer.machine_id) continue;
            out[f.kind] = f;
        }
        return out;
    }

    // ------------------------------------------------------------ machines

    function gpuList(inst) {
        const mg = inst.faults.missing_gpus;
        if (mg && mg.gpus === 'no_driver') return undefined;
        let n = inst.offer.num_gpus;
        if (mg) n = mg.gpus === 'none' ? 0 : (mg.gpus ?? n - 1);
        const name = inst.offer.smi_name ?? `NVIDIA ${inst.offer.gpu_name}`;
        const out = [];
        for (let i = 0; i < n; i++) out.push(`${i},${name},${inst.offer.gpu_ram}`);
        return out.join(';');
    }

    function sessionEnv(inst) {
        const env = {
            HOME: inst.machine.home,
            PATH: `${FIXTURES}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
            YARD_VAST_MACHINE: inst.machine.token,
            YARD_E2E_MARKER: h.MARKER,
            ...(opts.machineEnv || {}),
            ...(inst.offer.machine_env || {}),
        };
        const gpus = gpuList(inst);
        if (gpus !== undefined) env.YARD_FAKE_GPUS = gpus;
        return env;
    }

    function authorizedLine(inst, key) {
        const o = Object.entries(sessionEnv(inst))
            .map(([k, v]) => `environment="${k}=${v}"`)
            .join(',');
        return `${o} ${key.trim()}\n`;
    }

    function authorize(inst, key) {
        inst.keys.push(key);
        const sshd = inst.machine.sshd;
        if (sshd) fs.appendFileSync(path.join(sshd.dir, 'authorized_keys'), authorizedLine(inst, key));
    }

    function writeKnownHosts() {
        let text = '';
        for (const inst of instances.values()) {
            const m = inst.machine;
            if (!m.sshd || inst.destroyed) continue;
            const pub = fs.readFileSync(path.join(m.sshd.dir, 'host_key.pub'), 'utf8').trim().split(' ');
            const line = (name) => `${name} ${pub[0]} ${pub[1]}\n`;
            text += line(`[127.0.0.1]:${m.proxy.port}`);
            const direct = m.maps.get('22/tcp');
            if (direct) text += line(`[${m.publicAddr}]:${direct.port}`);
            text += line(m.sshPort === 22 ? m.addr : `[${m.addr}]:${m.sshPort}`);
        }
        fs.writeFileSync(knownHosts, text);
    }

    /** Where a machine's container port is reached from this host, or null while down. */
    function containerTarget(inst, port) {
        const m = inst.machine;
        if (!m.up) return null;
        if (port === 22 || port === m.sshPort) {
            const dead = inst.faults.ssh_dead;
            if (dead) return dead.mode === 'refuse' ? null : 'hang';
            return m.sshd ? { host: m.addr, port: m.sshPort } : null;
        }
        return { host: m.addr, port };
    }

    async function prepareMachine(inst) {
        const mdir = h.tmpdir('yard-vastm-');
        const home = path.join(mdir, 'home');
        fs.mkdirSync(home);
        const m = {
            dir: mdir,
            home,
            token: `yard-vast-${process.pid}-${inst.id}-${crypto.randomBytes(4).toString('hex')}`,
            up: false,
            sshd: null,
            onstart: null,
            maps: new Map(),
            proxy: null,
        };
        inst.machine = m;
        if (useNetns) {
            Object.assign(m, makeNamespace());
            m.publicAddr = m.hostAddr;
            m.sshPort = 22;
        } else {
            m.addr = '127.0.0.1';
            m.publicAddr = '127.0.0.1';
            m.sshPort = await h.freePort();
        }
        // Vast's ssh proxy: ssh_host:ssh_port reaches the container's 22 (ssh runtypes).
        const sshRuntype = /ssh/.test(inst.runtype);
        m.proxy = await startForward('127.0.0.1', () => (sshRuntype ? containerTarget(inst, 22) : null));
        const wanted = [];
        if (/ssh_direc/.test(inst.runtype)) wanted.push(['22/tcp', 22]);
        for (const key of Object.keys(inst.env)) {
            const p = /^-p\s+(?:\d+:)?(\d+)(?:\/(tcp|udp))?$/.exec(key);
            if (p && !wanted.some(([k]) => k === `${p[1]}/${p[2] || 'tcp'}`)) {
                wanted.push([`${p[1]}/${p[2] || 'tcp'}`, Number(p[1])]);
            }
        }
        for (const [key, port] of wanted.slice(0, inst.offer.direct_port_count)) {
            // udp is reported but not carried.
            const fwd = await startForward(m.publicAddr, () =>
                key.endsWith('/tcp') ? containerTarget(inst, port) : null,
            );
            m.maps.set(key, fwd);
        }
    }

    async function startMachine(inst) {
        const m = inst.machine;
        if (withSshd && !inst.faults.ssh_dead) {
            m.sshd = await startSshd({
                keyEnv: sessionEnv(inst),
                host: m.addr,
                port: m.sshPort,
                netns: m.ns,
            });
            if (inst.destroyed) {
                await m.sshd.proc.stop();
                return;
            }
            for (const k of inst.keys) fs.appendFileSync(path.join(m.sshd.dir, 'authorized_keys'), authorizedLine(inst, k));
        }
        m.up = true;
        inst.portsShown = true;
        if (inst.faults.ssh_dead?.mode === 'refuse') {
            // Nothing listens where ssh would be: connections are refused.
            await m.proxy.close();
            await m.maps.get('22/tcp')?.close();
        }
        writeKnownHosts();
        runOnstart(inst);
    }

    function runOnstart(inst) {
        const m = inst.machine;
        let argv = null;
        if (/args/.test(inst.runtype) && Array.isArray(inst.args) && inst.onstart) argv = [inst.onstart, ...inst.args];
        else if (inst.onstart) argv = ['bash', '-c', inst.onstart];
        if (!argv) return;
        const env = { ...sessionEnv(inst) };
        for (const [k, v] of Object.entries(inst.env)) if (!k.startsWith('-')) env[k] = String(v);
        const logPath = path.join(m.dir, 'onstart.log');
        const p = m.ns
            ? h.startProcess('ip', ['netns', 'exec', m.ns, ...argv], { env, cwd: m.home, logPath, name: 'onstart' })
            : h.startProcess(argv[0], argv.slice(1), { env, cwd: m.home, logPath, name: 'onstart' });
        m.onstart = p;
        inst.onstartExit = null;
        p.child.on('exit', (code, signal) => {
            inst.onstartExit = { code, signal };
        });
    }

    /** Stops what runs on the machine (the container stopped); listeners stay. */
    async function haltMachine(inst) {
        const m = inst.machine;
        if (!m) return;
        m.up = false;
        m.proxy?.drop();
        for (const f of m.maps.values()) f.drop();
        if (m.onstart) await m.onstart.stop(2000);
        // sshd's per-connection children leave its process group: take them by parentage.
        const doomed = m.sshd ? descendants(m.sshd.proc.pid) : [];
        if (m.sshd) await m.sshd.proc.stop(2000);
        m.sshd = null;
        for (const pid of [...doomed, ...h.processesMatching(m.token)]) {
            try {
                process.kill(pid, 'SIGKILL');
            } catch {
                // gone
            }
        }
        if (m.ns) {
            const r = spawnSync('ip', ['netns', 'pids', m.ns], { encoding: 'utf8' });
            for (const pid of (r.stdout || '').split(/\s+/).filter(Boolean)) {
                try {
                    process.kill(Number(pid), 'SIGKILL');
                } catch {
                    // gone
                }
            }
        }
        writeKnownHosts();
    }

    async function removeMachine(inst) {
        await haltMachine(inst);
        const m = inst.machine;
        if (!m) return;
        await m.proxy?.close();
        for (const f of m.maps.values()) await f.close();
        if (m.ns) deleteNamespace(m.ns);
    }

    // ------------------------------------------------------------ lifecycle

    function stepsFor(inst) {
        const f = inst.faults;
        const st = (actual, extra = {}) => ({ actual, ...extra });
        if (inst.failedBid) {
            return [st('stopped', { cur: 'stopped', intended: 'stopped', next: 'stopped' })];
        }
        if (f.oci_error) return [st(null), st('created', { msg: f.oci_error.msg ?? OCI_MSG, hold: true })];
        if (f.stuck_loading) return [st(null), st('loading', { hold: true })];
        if (f.exited && f.exited.after === 'running') {
            return [st(null), st('loading'), st('running', { start: true }), st('exited', { halt: true })];
        }
        if (f.exited) return [st(null), st('loading'), st('exited')];
        return [st(null), st('loading'), st('running', { start: true })];
    }

    const PHASE_MS = { null: 'created', loading: 'loading', running: 'running' };

    function setRunning(inst, running) {
        const t = now();
        if (running && inst.runningSince === null) inst.runningSince = t;
        if (!running && inst.runningSince !== null) {
            inst.runningMs += t - inst.runningSince;
            inst.runningSince = null;
        }
    }

    async function enterStep(inst, i) {
        const s = inst.steps[i];
        if (s.start) await startMachine(inst);
        if (s.halt) await haltMachine(inst);
        if (inst.destroyed) return;
        inst.step = i;
        inst.actual_status = s.actual;
        if (s.msg !== undefined) inst.status_msg = s.msg;
        inst.stamps.entered[String(s.actual)] ??= process.hrtime.bigint();
        if (s.cur) inst.cur_state = s.cur;
        if (s.intended) inst.intended_status = s.intended;
        if (s.next) inst.next_state = s.next;
        setRunning(inst, s.actual === 'running');
        schedule(inst);
    }

    function schedule(inst) {
        clearTimeout(inst.timer);
        inst.timer = null;
        if (opts.manual || inst.destroyed) return;
        const s = inst.steps[inst.step];
        if (s.hold || inst.step + 1 >= inst.steps.length) return;
        inst.timer = setTimeout(() => {
            inst.timer = null;
            inst.moving = enterStep(inst, inst.step + 1).catch((err) => {
                if (!inst.destroyed) state.errors.push(`instance ${inst.id}: ${err.message}`);
            });
        }, timing[PHASE_MS[String(s.actual)]] ?? timing.running);
    }

    /**
     * Moves an instance one step on (manual clock), or on until its actual_status is
     * `status`. Throws when it cannot move that way (held by a fault, or at its end).
     */
    async function advance(id, status) {
        const inst = instances.get(id);
        if (!inst || inst.destroyed) throw new Error(`vast stand-in: no live instance ${id}`);
        if (inst.moving) await inst.moving;
        do {
            const s = inst.steps[inst.step];
            if (s.hold || inst.step + 1 >= inst.steps.length) {
                throw new Error(`vast stand-in: instance ${id} stays '${inst.actual_status}'`);
            }
            inst.moving = enterStep(inst, inst.step + 1);
            await inst.moving;
        } while (status !== undefined && inst.actual_status !== status);
        return view(inst);
    }

    async function exitNow(id) {
        const inst = instances.get(id);
        if (!inst || inst.destroyed) throw new Error(`vast stand-in: no live instance ${id}`);
        if (inst.moving) await inst.moving;
        clearTimeout(inst.timer);
        await haltMachine(inst);
        inst.actual_status = 'exited';
        inst.stamps.entered.exited ??= process.hrtime.bigint();
        inst.steps = [...inst.steps.slice(0, inst.step + 1), { actual: 'exited', hold: true }];
        inst.step += 1;
        setRunning(inst, false);
    }

    /** The market stops an interruptible instance: everything reads "stopped". */
    async function outbid(id) {
        const inst = instances.get(id);
        if (!inst || inst.destroyed) throw new Error(`vast stand-in: no live instance ${id}`);
        if (!inst.isBid) throw new Error(`vast stand-in: instance ${id} is on-demand; only a bid is outbid`);
        if (inst.moving) await inst.moving;
        clearTimeout(inst.timer);
        await haltMachine(inst);
        Object.assign(inst, {
            actual_status: 'stopped',
            cur_state: 'stopped',
            intended_status: 'stopped',
            next_state: 'stopped',
        });
        inst.steps = [...inst.steps.slice(0, inst.step + 1), { actual: 'stopped', hold: true }];
        inst.step += 1;
        setRunning(inst, false);
    }

    // ------------------------------------------------------------ views

    function view(inst) {
        const o = inst.offer;
        const m = inst.machine;
        const startDate = inst.createdAt / 1000;
        const ports = {};
        if (inst.portsShown) {
            for (const [key, fwd] of m.maps) ports[key] = [{ HostIp: '0.0.0.0', HostPort: String(fwd.port) }];
        }
        const hostPorts = [...m.maps.values()].map((f) => f.port);
        return {
            id: inst.id,
            machine_id: o.machine_id,
            host_id: o.host_id,
            bundle_id: o.id,
            actual_status: inst.actual_status,
            intended_status: inst.intended_status,
            cur_state: inst.cur_state,
            next_state: inst.next_state,
            status_msg: inst.status_msg,
            label: inst.label,
            template_id: null,
            template_hash_id: inst.template_hash_id ?? null,
            template_name: null,
            image_uuid: inst.image,
            image_args: inst.args ?? [],
            image_runtype: inst.runtype,
            extra_env: Object.entries(inst.env).map(([k, v]) => [k, String(v)]),
            onstart: inst.onstart,
            ssh_host: '127.0.0.1',
            ssh_idx: String(inst.id % 1000),
            ssh_port: m.proxy.port,
            public_ipaddr: `${m.publicAddr}\n`,
            local_ipaddrs: `${m.addr} \n`,
            ports,
            direct_port_count: o.direct_port_count,
            direct_port_start: hostPorts.length && inst.portsShown ? Math.min(...hostPorts) : -1,
            direct_port_end: hostPorts.length && inst.portsShown ? Math.max(...hostPorts) : -1,
            static_ip: o.static_ip,
            start_date: startDate,
            end_date: startDate + 30 * 86400,
            duration: (now() - inst.createdAt) / 1000,
            uptime_mins: inst.runningSince !== null ? (now() - inst.runningSince) / 60000 : null,
            num_gpus: o.num_gpus,
            gpu_name: o.gpu_name,
            gpu_ram: o.gpu_ram,
            gpu_totalram: o.gpu_total_ram,
            gpu_util: null,
            gpu_temp: null,
            gpu_arch: o.gpu_arch,
            compute_cap: o.compute_cap,
            cuda_max_good: o.cuda_max_good,
            driver_version: o.driver_version,
            cpu_name: o.cpu_name,
            cpu_cores: o.cpu_cores,
            cpu_cores_effective: o.cpu_cores_effective,
            cpu_ram: o.cpu_ram,
            cpu_util: null,
            disk_space: inst.disk,
            inet_up: o.inet_up,
            inet_down: o.inet_down,
            geolocation: o.geolocation,
            reliability2: o.reliability2,
            verification: o.verification,
            dph_base: inst.isBid ? inst.rate : o.dph_base,
            dph_total: round(inst.rate + (o.storage_cost * inst.disk) / 720),
            storage_cost: o.storage_cost,
            min_bid: o.min_bid,
            is_bid: inst.isBid,
        };
    }

    // ------------------------------------------------------------ handlers

    /** Whether an offer is rented (by this account) now. */
    const isTaken = (offerId) =>
        pending.has(offerId) || [...instances.values()].some((i) => i.offer.id === offerId && !i.destroyed);

    function search(q) {
        if (!q || typeof q !== 'object' || Array.isArray(q)) throw invalidArgs('the query must be a JSON object');
        const filters = parseFilters(q, SEARCH_KEYS);
        const type = q.type ?? 'on-demand';
        if (!SEARCH_TYPES.has(type)) throw invalidArgs(`unknown type '${type}': on-demand, bid or reserved`);
        let order = q.order ?? [];
        const badOrder = (e) => !Array.isArray(e) || typeof e[0] !== 'string' || !['asc', 'desc'].includes(e[1] ?? 'asc');
        if (!Array.isArray(order) || order.some(badOrder)) {
            throw invalidArgs('order must be a list of [field, "asc"|"desc"]');
        }
        const allocated = q.allocated_storage !== undefined ? Number(q.allocated_storage) : 8;
        if (!Number.isFinite(allocated) || allocated < 0) throw invalidArgs('allocated_storage must be a number');
        let rows = [];
        for (const offer of offers.values()) {
            if (isTaken(offer.id) || gone.get(offer.id)?.refused) continue;
            const v = offerView(offer, allocated);
            let ok = true;
            for (const [field, op, want] of filters) {
                if (!(field in v)) {
                    state.ignoredFilters.add(field); // a field offers do not carry filters nothing
                    continue;
                }
                if (!compare(v[field], op, want, field)) ok = false;
            }
            if (ok) rows.push(v);
        }
        if (order.length) rows = sortRows(rows, order);
        if (q.limit !== undefined) {
            const limit = Number(q.limit);
            if (!Number.isInteger(limit) || limit < 0) throw invalidArgs('limit must be a whole number');
            rows = rows.slice(0, limit);
        }
        return { offers: rows };
    }

    async function create(askId, body) {
        const offer = offers.get(askId);
        if (!offer) {
            throw notAvailable(askId);
        }
        if (gone.has(askId) || isTaken(askId)) {
            const g = gone.get(askId) ?? { status: 410 };
            g.refused = true;
            if (g.status === 404) {
                throw notAvailable(askId);
            }
            throw noLongerAvailable(askId);
        }
        if (!body || typeof body !== 'object' || Array.isArray(body)) throw invalidArgs('the body must be a JSON object');
        if ((typeof body.image !== 'string' || !body.image) && !body.template_hash_id) {
            throw invalidArgs('image is required (or a template_hash_id)');
        }
        const disk = body.disk ?? 8;
        if (typeof disk !== 'number' || !(disk > 0)) throw invalidArgs('disk must be a positive number of GB');
        if (body.price !== undefined && body.price !== null && typeof body.price !== 'number') {
            throw invalidArgs('price must be a number ($/hour)');
        }
        const envObject = body.env && typeof body.env === 'object' && !Array.isArray(body.env);
        const isBid = typeof body.price === 'number';
        const failedBid = isBid && body.price < offer.min_bid;
        const scripted = takeFault((f) => f.kind === 'create_fails' && (f.offer === undefined || f.offer === askId));
        const inst = {
            id: instanceSeq++,
            offer,
            label: body.label ?? null,
            image: body.image ?? null,
            template_hash_id: body.template_hash_id,
            disk,
            env: envObject ? body.env : {},
            envIgnored: body.env !== undefined && body.env !== null && !envObject ? body.env : undefined,
            runtype: body.runtype ?? (body.args !== undefined && body.args !== null ? 'args' : 'ssh'),
            args: body.args ?? null,
            onstart: body.onstart ?? null,
            isBid,
            rate: isBid ? body.price : offer.dph_base,
            failedBid: failedBid || !!scripted,
            faults: lifeFaults(offer),
            keys: [],
            actual_status: null,
            cur_state: 'running',
            intended_status: 'running',
            next_state: 'running',
            status_msg: null,
            createdAt: now(),
            runningSince: null,
            runningMs: 0,
            destroyedAt: null,
            destroyed: false,
            step: 0,
            timer: null,
            moving: null,
            portsShown: false,
            // CLOCK_MONOTONIC ns: the first entry into each actual_status, the first GET
            // of the instance answered with each, the first DELETE (bench/lib/cloud.mjs)
            stamps: { entered: {}, answered: {}, destroy: null },
        };
        pending.add(askId);
        try {
            await prepareMachine(inst);
        } finally {
            pending.delete(askId);
        }
        instances.set(inst.id, inst);
        state.maxAlive = Math.max(state.maxAlive, state.alive());
        for (const k of state.accountKeys) inst.keys.push(k.public_key);
        inst.steps = stepsFor(inst);
        await enterStep(inst, 0);
        if (opts.onCreate) await opts.onCreate(inst.id);
        if (inst.failedBid) {
            const status = scripted ? scripted.status : 200;
            return [
                status,
                {
                    success: false,
                    new_contract: inst.id,
                    msg:
                        scripted?.msg ??
                        `bid ${body.price} is under the minimum bid ${offer.min_bid}; the instance was created stopped`,
                },
            ];
        }
        return [200, { success: true, new_contract: inst.id }];
    }

    async function destroy(id) {
        const inst = instances.get(id);
        if (!inst || inst.destroyed) {
            throw noSuchInstance(id);
        }
        clearTimeout(inst.timer);
        setRunning(inst, false);
        inst.destroyedAt = now();
        inst.destroyed = true;
        if (inst.moving) await inst.moving;
        await removeMachine(inst);
        return { success: true, msg: 'Instance destroyed successfully' };
    }

    function liveViews() {
        return [...instances.values()].filter((i) => !i.destroyed).map(view);
    }

    function listV1(query) {
        const parse = (name, dflt) => {
            const raw = query.get(name);
            if (raw === null) return dflt;
            try {
                return JSON.parse(raw);
            } catch {
                throw invalidArgs(`${name} is not JSON`);
            }
        };
        const filters = parseFilters(parse('select_filters', {}) || {}, new Set());
        const orderBy = parse('order_by', [{ col: 'id', dir: 'asc' }]);
        if (!Array.isArray(orderBy) || orderBy.some((o) => !o || typeof o.col !== 'string')) {
            throw invalidArgs('order_by must be a list of {"col", "dir"}');
        }
        let limit = query.get('limit') === null ? 25 : Number(query.get('limit'));
        if (!Number.isInteger(limit) || limit < 1) throw invalidArgs('limit must be a whole number');
        limit = Math.min(limit, 25);
        let offset = 0;
        const token = query.get('after_token');
        if (token) {
            try {
                offset = JSON.parse(Buffer.from(token, 'base64').toString('utf8')).offset;
            } catch {
                throw invalidArgs('after_token is not a token this API gave');
            }
        }
        let rows = liveViews().filter((v) => filters.every(([f, op, want]) => compare(v[f], op, want, f)));
        rows = sortRows(rows, orderBy.map((o) => [o.col, o.dir === 'desc' ? 'desc' : 'asc']));
        const page = rows.slice(offset, offset + limit);
        const labelCounts = {};
        for (const r of rows) labelCounts[r.label ?? ''] = (labelCounts[r.label ?? ''] ?? 0) + 1;
        const next =
            offset + limit < rows.length
                ? Buffer.from(JSON.stringify({ values: { id: page[page.length - 1].id }, offset: offset + limit })).toString('base64')
                : null;
        return { instances: page, next_token: next, total_instances: rows.length, label_counts: labelCounts };
    }

    function sshKeyOf(body) {
        const key = body && typeof body.ssh_key === 'string' ? body.ssh_key.trim() : '';
        if (!/^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-\S+|sk-\S+) [A-Za-z0-9+/=]+( .*)?$/.test(key) || key.includes('\n')) {
            throw new ApiError(400, { success: false, error: 'invalid_args', msg: 'invalid ssh key' });
        }
        return key;
    }

    async function route(method, p, query, body) {
        let m;
        if (p === '/api/v0/bundles/') {
            if (method === 'POST') return [200, search(body)];
            if (method === 'GET') {
                let q = {};
                try {
                    q = JSON.parse(query.get('q') || '{}');
                } catch {
                    throw invalidArgs('q is not JSON');
                }
                return [200, search(q)];
            }
        } else if (p === '/api/v0/search/asks/') {
            if (method === 'PUT') {
                if (!body || typeof body.q !== 'object') throw invalidArgs('the body must be {"q": {...}}');
                return [200, search(body.q)];
            }
        } else if ((m = /^\/api\/v0\/asks\/(\d+)\/$/.exec(p))) {
            if (method === 'PUT') return create(Number(m[1]), body);
        } else if (p === '/api/v0/instances/') {
            if (method === 'GET') return [200, { instances: liveViews() }];
        } else if (p === '/api/v1/instances/') {
            if (method === 'GET') return [200, listV1(query)];
        } else if ((m = /^\/api\/v0\/instances\/(\d+)\/$/.exec(p))) {
            const id = Number(m[1]);
            const inst = instances.get(id);
            if (method === 'GET') {
                if (!inst || inst.destroyed) return [200, { instances: null }];
                inst.stamps.answered[String(inst.actual_status)] ??= process.hrtime.bigint();
                return [200, { instances: view(inst) }];
            }
            if (method === 'DELETE') {
                if (inst) inst.stamps.destroy ??= process.hrtime.bigint();
                return [200, await destroy(id)];
            }
            if (method === 'PUT') {
                if (!inst || inst.destroyed) {
                    throw noSuchInstance(id);
                }
                if (!body || typeof body.label !== 'string') throw invalidArgs('the stand-in changes only {"label"}');
                inst.label = body.label;
                return [200, { success: true }];
            }
        } else if ((m = /^\/api\/v0\/instances\/(\d+)\/ssh\/$/.exec(p))) {
            if (method === 'POST') {
                const inst = instances.get(Number(m[1]));
                if (!inst || inst.destroyed) {
                    throw noSuchInstance(m[1]);
                }
                authorize(inst, sshKeyOf(body));
                return [200, { success: true, msg: 'SSH key attached successfully' }];
            }
        } else if (p === '/api/v0/ssh/') {
            if (method === 'POST') {
                const key = { id: accountKeySeq++, public_key: sshKeyOf(body) };
                state.accountKeys.push(key);
                return [200, { success: true, key }];
            }
        } else {
            throw new ApiError(404, { success: false, error: 'not_found', msg: `no endpoint ${p}` });
        }
        throw new ApiError(405, { success: false, error: 'method_not_allowed', msg: `${method} is not allowed on ${p}` });
    }

    const sendJson = (res, status, obj) => {
        const text = JSON.stringify(obj);
        res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
        res.end(text);
    };
    const sendText = (res, status, text, type) => {
        res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text) });
        res.end(text);
    };

    async function handle(req, res) {
        const chunks = [];
        for await (const c of req) chunks.push(c);
        const raw = Buffer.concat(chunks).toString('utf8');
        const u = new URL(req.url, 'http://standin');
        const method = req.method;
        let json;
        let badJson = false;
        if (raw.length) {
            try {
                json = JSON.parse(raw);
            } catch {
                badJson = true;
            }
        }
        state.requests.push({
            method,
            path: u.pathname,
            query: Object.fromEntries(u.searchParams),
            headers: req.headers,
            body: raw,
            json,
            at: now(),
        });

        const f = takeFault((x) => HTTP_KINDS.has(x.kind) && pathMatches(x, method, u.pathname));
        if (f) {
            if (f.kind === 'rate_limit') {
                const text = f.threshold !== undefined ? `${RATE_LIMIT_TEXT}: endpoint threshold=${f.threshold}` : RATE_LIMIT_TEXT;
                return sendText(res, 429, text, 'text/plain');
            }
            const status = f.status ?? 502;
            const title = `${status} ${http.STATUS_CODES[status]}`;
            const body =
                f.body ??
                `<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n` +
                    `<center><h1>${title}</h1></center>\r\n</body>\r\n</html>\r\n`;
            if (typeof body === 'string') return sendText(res, status, body, f.contentType ?? 'text/html');
            return sendJson(res, status, body);
        }

        const auth = req.headers.authorization;
        const ok = auth === `Bearer ${apiKey}` || (auth === undefined && u.searchParams.get('api_key') === apiKey);
        if (!ok) return sendJson(res, 401, { success: false, error: 'auth_error', msg: 'Invalid user key' });
        if (badJson) return sendJson(res, 400, { success: false, error: 'invalid_args', msg: 'the body is not JSON' });

        try {
            const [status, out] = await route(method, u.pathname, u.searchParams, json);
            sendJson(res, status, out);
        } catch (err) {
            if (err instanceof ApiError) {
                if (typeof err.body === 'string') return sendText(res, err.status, err.body, 'text/plain');
                return sendJson(res, err.status, err.body);
            }
            state.errors.push(`${method} ${u.pathname}: ${err.stack || err.message}`);
            sendJson(res, 500, { success: false, error: 'server_error', msg: 'the stand-in failed; see state.errors' });
        }
    }

    const server = http.createServer((req, res) => {
        handle(req, res).catch((err) => {
            state.errors.push(`${req.method} ${req.url}: ${err.stack || err.message}`);
            if (!res.headersSent) res.writeHead(500);
            res.end();
        });
    });
    await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
    });
    const url = `http://127.0.0.1:${server.address().port}`;
    const handle_ = { stop: () => stop() };
    liveStandins.add(handle_);

    let stopped = false;
    async function stop() {
        if (stopped) return;
        stopped = true;
        liveStandins.delete(handle_);
        server.closeAllConnections();
        await new Promise((r) => server.close(() => r()));
        for (const inst of instances.values()) {
            clearTimeout(inst.timer);
            if (inst.moving) await inst.moving;
            if (!inst.destroyed) {
                setRunning(inst, false);
                inst.destroyedAt = now();
                inst.destroyed = true;
            }
            await removeMachine(inst);
        }
    }

    function sshCommand(id, { via = 'direct', key = clientKey?.path } = {}) {
        const inst = instances.get(id);
        if (!inst) throw new Error(`vast stand-in: no instance ${id}`);
        const m = inst.machine;
        let host;
        let port;
        if (via === 'proxy') [host, port] = ['127.0.0.1', m.proxy.port];
        else if (via === 'container') [host, port] = [m.addr, m.sshPort];
        else {
            const d = m.maps.get('22/tcp');
            if (!d) throw new Error(`vast stand-in: instance ${id} has no direct 22/tcp mapping`);
            [host, port] = [m.publicAddr, d.port];
        }
        return (
            `ssh -F /dev/null -p ${port} -i ${key} -o IdentitiesOnly=yes -o BatchMode=yes ` +
            `-o UserKnownHostsFile=${knownHosts} root@${host}`
        );
    }

    return {
        url,
        apiKey,
        dir,
        state,
        stop,
        script,
        addOffer,
        advance,
        outbid,
        sshCommand,
        clientKey,
        knownHosts,
        /** The instance as GET /api/v0/instances/{id}/ shows it, or null. */
        instance(id) {
            const inst = instances.get(id);
            return inst && !inst.destroyed ? view(inst) : null;
        },
        /** The machine of an instance: {dir, home, addr, publicAddr, ns, sshd, ...}. */
        machine(id) {
            return instances.get(id)?.machine ?? null;
        },
    };
}
