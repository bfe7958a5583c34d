// Soak: kill -9 the daemon again and again under a steady mixed load.
//
// Three models share one declared 40 GiB GPU (mock engines keep their "memory" in a
// ledger the daemon's inventory reads); each needs 18 GiB, so two fit awake and the
// third must evict one. `va` (vLLM) and `sg` (SGLang) sleep in place when evicted
// (eviction {weights: offload}); `lc` (llama.cpp) is stopped. The load rotates
// between pairs of models, so swaps (sleep, wake, stop, start) never stop.
//
// Workers send chat completions, streaming and not, on fresh or keep-alive
// connections, and check every answer's text. The daemon is killed with SIGKILL
// at a random moment (every second kill aimed at the instant it logs a sleep, a
// wake, a start, a spawn not yet recorded or a stop), stays down a moment, and is started again on the same
// state directory, where it re-adopts the engines. New requests wait while the
// adoption is checked, then flow again. After each restart:
//   - no orphan:   every live mock engine of the run belongs, by process group, to
//                  an instance `yard ps` reports (an orphan must persist 3 s to count)
//   - no double:   never two engine processes for one model (watched every 100 ms,
//                  the whole time, not only after restarts)
//   - adoption:    no vLLM engine that is asleep is adopted as ready (it would
//                  crash on its next request): GET /is_sleeping on the engine
//   - store:       PRAGMA integrity_check on STATE_DIR/yard.db is ok
//   - recovery:    a request sent after the restart succeeds within RECOVERY_MS
// Requests that fail are counted by when they failed: sent while the daemon was
// down, in flight when it was killed, or sent while it was up (the last are not
// expected; their reasons are listed).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import * as h from '../e2e/lib/harness.mjs';
import { mockCmd, mockText, chatStreamText, tcpAccepts, events } from '../e2e/lib/router-helpers.mjs';
import { trackNeedle, trackPs } from './lib/cleanup.mjs';
import {
    mockEngines,
    ownership,
    duplicates,
    integrityCheck,
    median,
    percentile,
    ms,
    randInt,
} from './lib/common.mjs';

const MODELS = ['va', 'sg', 'lc'];
const RECOVERY_MS = 30000;
const ORPHAN_GRACE_MS = 3000;
const REQUEST_TIMEOUT_MS = 45000;
// Every second kill is aimed: it lands a few milliseconds after the daemon logs one
// of these (in turn), inside the transition, where a random kill rarely falls.
const AIMS = [
    ['a sleep', / going to sleep /],
    ['a wake', / waking from /],
    ['a start', / stopped -> starting/],
    // After the spawn, before the pid is recorded: the engine waits at the runner's gate.
    ['a spawn before its record', / runs as pid \d+ on port \d+ once recorded/],
    ['a stop', / ready -> stopping/],
];

function config({ port, ledger }) {
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    const mock = (flavor, extra = '') =>
        mockCmd(flavor, `--load-time 400ms --tokens-per-sec 200 --vram 18GiB --ledger ${ledger} ${extra}`);
    const models = {
        va: { engine: 'vllm', cmd: mock('vllm'), vram: '18GiB', eviction: { weights: 'offload' } },
        sg: {
            engine: 'sglang',
            cmd: mock('sglang', '--warmup-time 50ms'),
            vram: '18GiB',
            eviction: { weights: 'offload' },
        },
        lc: { engine: 'llamacpp', cmd: mock('llamacpp'), vram: '18GiB' },
    };
    let y = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\n`;
    y += `gpus: ${JSON.stringify([{ index: 0, name: 'Mock GPU 40G', memory: '40GiB' }])}\n`;
    y += `gpu_ledger: ${JSON.stringify(ledger)}\n`;
    y += `defaults: ${JSON.stringify({ stop_timeout: '2s', startup_timeout: '30s' })}\n`;
    y += `router: ${JSON.stringify({ max_wait: '40s', max_queue: 256 })}\n`;
    y += 'models:\n';
    for (const [name, body] of Object.entries(models)) y += `  ${name}: ${JSON.stringify(body)}\n`;
    return y;
}

// ---------------------------------------------------------------- one request

/** One chat completion; resolves { ok, why } after checking the whole answer. */
function chat(base, model, { stream, agent, maxTokens }) {
    const body = JSON.stringify({
        model,
        stream,
        max_tokens: maxTokens,
        messages: [{ role: 'user', content: 'soak' }],
    });
    const want = mockText(maxTokens);
    return new Promise((resolve) => {
        let settled = false;
        const done = (ok, why) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve({ ok, why });
        };
        const req = http.request(
            `${base}/v1/chat/completions`,
            {
                method: 'POST',
                agent,
                headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
            },
            (res) => {
                res.setEncoding('utf8');
                let text = '';
                res.on('data', (c) => (text += c));
                res.on('error', (err) => done(false, `response: ${err.code || err.message}`));
                res.on('aborted', () => done(false, 'response aborted'));
                res.on('end', () => {
                    if (res.statusCode !== 200) {
                        done(false, `HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
                        return;
                    }
                    if (stream) {
                        const evs = h.parseSSE(text);
                        const got = chatStreamText(evs);
                        if (!evs.length || evs[evs.length - 1].data !== '[DONE]')
                            done(false, `stream without [DONE] (${got.length} chars)`);
                        else if (got !== want) done(false, `stream text ${JSON.stringify(got.slice(0, 60))}`);
                        else done(true);
                        return;
                    }
                    try {
                        const o = JSON.parse(text);
                        const got = o.choices?.[0]?.message?.content;
                        if (o.model !== model) done(false, `answered by '${o.model}'`);
                        else if (got !== want) done(false, `text ${JSON.stringify(String(got).slice(0, 60))}`);
                        else done(true);
                    } catch {
                        done(false, `not JSON: ${text.slice(0, 200)}`);
                    }
                });
            }
        );
        const timer = setTimeout(() => {
            req.destroy();
            done(false, `no answer in ${REQUEST_TIMEOUT_MS} ms`);
        }, REQUEST_TIMEOUT_MS);
        req.on('error', (err) => done(false, err.code || err.message));
        req.end(body);
    });
}

// ---------------------------------------------------------------- the load

class Load {
    constructor({ base, workers, phaseMs }) {
        this.base = base;
        this.workers = workers;
        this.phaseMs = phaseMs;
        this.t0 = Date.now();
        this.running = false;
        this.up = true;
        this.hold = false; // no new request while set (the adoption check after a restart)
        this.kills = []; // kill instants
        this.records = []; // { t0, t1, model, stream, ok, why, class }
        this.agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
        this.loops = [];
    }

    /** The pair of models the load asks for now: it moves on every phaseMs. */
    pickModel() {
        const k = Math.floor((Date.now() - this.t0) / this.phaseMs);
        const pair = [MODELS[k % 3], MODELS[(k + 1) % 3]];
        return pair[Math.random() < 0.5 ? 0 : 1];
    }

    start() {
        this.running = true;
        for (let i = 0; i < this.workers; i++) this.loops.push(this.loop(i));
    }

    async stop() {
        this.running = false;
        await Promise.all(this.loops);
        this.agent.destroy();
    }

    async loop(i) {
        while (this.running) {
            while (this.hold && this.running) await h.sleep(5);
            if (!this.running) break;
            const model = this.pickModel();
            const stream = i % 2 === 0 ? Math.random() < 0.8 : Math.random() < 0.2;
            const keepAlive = Math.random() < 0.5;
            const t0 = Date.now();
            const upAtStart = this.up;
            const r = await chat(this.base, model, {
                stream,
                agent: keepAlive ? this.agent : false,
                maxTokens: randInt(4, 24),
            });
            const t1 = Date.now();
            let cls = 'ok';
            if (!r.ok) {
                if (!upAtStart) cls = 'down';
                else if (this.kills.some((k) => k >= t0 - 5 && k <= t1)) cls = 'cut';
                else cls = 'up';
            }
            this.records.push({ t0, t1, model, stream, keepAlive, ok: r.ok, why: r.why, cls });
            if (!r.ok) await h.sleep(cls === 'up' ? 20 : randInt(30, 80)); // no busy loop while it is down
        }
    }

    /** First successful request sent at or after t, or null. */
    firstSuccessSince(t) {
        for (const r of this.records) if (r.ok && r.t0 >= t) return r;
        return null;
    }
}

// ---------------------------------------------------------------- checks

/** Resolves true as soon as a line matching re is appended to file (polled every
 *  2 ms from its current end), false after timeoutMs. */
async function waitLogLine(file, re, timeoutMs) {
    const fd = fs.openSync(file, 'r');
    try {
        let pos = fs.fstatSync(fd).size;
        let carry = '';
        const deadline = Date.now() + timeoutMs;
        const buf = Buffer.alloc(65536);
        while (Date.now() < deadline) {
            const n = fs.readSync(fd, buf, 0, buf.length, pos);
            if (n > 0) {
                pos += n;
                const text = carry + buf.toString('utf8', 0, n);
                const lines = text.split('\n');
                carry = lines.pop();
                if (lines.some((l) => re.test(l))) return true;
                continue;
            }
            await h.sleep(2);
        }
        return false;
    } finally {
        fs.closeSync(fd);
    }
}

/** Orphans that persist for graceMs across fresh `yard ps` snapshots (a spawn in
 *  progress is not yet recorded for a moment; a real orphan stays). */
async function persistentOrphans(stateDir, needle, graceMs) {
    const deadline = Date.now() + graceMs;
    for (;;) {
        const before = await h.ps(stateDir);
        const engines = mockEngines(needle);
        const after = await h.ps(stateDir);
        trackPs(after);
        const { orphans } = ownership(engines, [...before, ...after]);
        if (!orphans.length || Date.now() >= deadline) return { orphans, engines, ps: after };
        await h.sleep(200);
    }
}

/**
 * Once the new daemon has adopted every live engine (yard ps shows its pid in a
 * state other than stopped), asks each vLLM engine yard calls `ready` whether it
 * is asleep (GET /is_sleeping): a ready instance whose engine sleeps crashes on
 * its next request. Also counts instances adopted `sleeping` whose engine is
 * awake (killed mid-wake; harmless, the next wake is a no-op). Returns
 * { asleepButReady: [string], awakeButSleeping: n }.
 */
async function adoptionCheck(stateDir, needle) {
    let list = [];
    await h
        .waitFor(
            async () => {
                const engines = mockEngines(needle);
                list = await h.ps(stateDir);
                return engines.every((e) => list.some((x) => x.pid === e.pid && x.state !== 'stopped'));
            },
            { timeoutMs: 5000, intervalMs: 20, what: 'every live engine adopted' }
        )
        .catch(() => null);
    const out = { asleepButReady: [], awakeButSleeping: 0 };
    for (const e of list) {
        if (e.engine !== 'vllm' || !e.port || !['ready', 'sleeping'].includes(e.state)) continue;
        const r = await h.httpProbe(`http://127.0.0.1:${e.port}/is_sleeping`);
        let asleep = null;
        try {
            asleep = JSON.parse(r.body).is_sleeping;
        } catch {
            continue; // not answering (still loading, or gone)
        }
        if (e.state === 'ready' && asleep === true)
            out.asleepButReady.push(
                `'${e.name}' (pid ${e.pid}) adopted as ready, its engine says is_sleeping: true`
            );
        if (e.state === 'sleeping' && asleep === false) out.awakeButSleeping++;
    }
    return out;
}

/** Watches the run's engines every intervalMs: double starts and engine counts. */
function engineWatcher(needle, intervalMs = 100) {
    const w = { violations: [], maxAlive: 0, seen: new Set(), samples: 0 };
    const tick = () => {
        const engines = mockEngines(needle);
        w.samples++;
        w.maxAlive = Math.max(w.maxAlive, engines.length);
        for (const e of engines) w.seen.add(`${e.pid}:${e.starttime}`);
        const d = duplicates(engines);
        if (d.length) w.violations.push(`${new Date().toISOString()} ${d.join('; ')}`);
    };
    const timer = setInterval(tick, intervalMs);
    w.stop = () => clearInterval(timer);
    return w;
}

// ---------------------------------------------------------------- the scenario

export async function run(report, { kills }) {
    const dir = h.tmpdir('yard-soak-');
    const ledger = path.join(dir, 'ledger');
    trackNeedle(ledger);
    const port = await h.freePort();
    const base = `http://127.0.0.1:${port}`;
    const cfgPath = h.writeConfig(dir, config({ port, ledger }));
    const started = Date.now();

    const startD = async () => {
        const d = await h.startDaemon({ config: cfgPath, stateDir: dir });
        await h.waitFor(() => tcpAccepts(port), { timeoutMs: 10000, what: `yard listening on ${base}` });
        return d;
    };

    let d = await startD();
    const watcher = engineWatcher(ledger);
    const load = new Load({ base, workers: 6, phaseMs: 1500 });
    load.start();

    const orphanFails = [];
    const storeFails = [];
    const recoveries = [];
    const recoveryFails = [];
    const killContext = {};
    const aimed = {}; // what -> [tried, hit]
    const adoptFails = [];
    let awakeButSleeping = 0;
    let lastAim = null;
    let restarts = 0;
    let err = null;
    try {
        // Let the first loads and swaps happen before the first kill.
        await h.waitFor(() => load.firstSuccessSince(started), {
            timeoutMs: RECOVERY_MS,
            what: 'a first successful request',
        });
        for (let i = 1; i <= kills; i++) {
            await h.sleep(randInt(800, 3000));
            // What was going on at the kill, for the report.
            try {
                for (const e of await h.ps(dir)) {
                    if (e.state !== 'stopped') killContext[e.state] = (killContext[e.state] || 0) + 1;
                }
            } catch {
                // the picture is only for the report
            }
            lastAim = null;
            if (i % 2 === 0) {
                const [what, re] = AIMS[(i / 2 - 1) % AIMS.length];
                lastAim = what;
                const hit = await waitLogLine(d.logPath, re, 5000);
                aimed[what] = aimed[what] || [0, 0];
                aimed[what][0]++;
                if (hit) aimed[what][1]++;
            }
            load.up = false;
            load.kills.push(Date.now());
            d.kill('SIGKILL');
            await d.waitExit(5000);
            await h.sleep(randInt(50, 500));

            load.hold = true; // the adoption check sees the daemon as it adopted
            d = await startD();
            restarts++;
            const tUp = Date.now();
            load.up = true;
            const a = await adoptionCheck(dir, ledger);
            load.hold = false;
            const aim = lastAim ? ` (aimed at ${lastAim})` : '';
            for (const x of a.asleepButReady) adoptFails.push(`kill ${i}${aim}: ${x}`);
            awakeButSleeping += a.awakeButSleeping;

            const ic = integrityCheck(dir);
            if (!ic.ok) storeFails.push(`kill ${i}: ${ic.text.slice(0, 300)}`);

            const o = await persistentOrphans(dir, ledger, ORPHAN_GRACE_MS);
            if (o.orphans.length) {
                orphanFails.push(
                    `kill ${i}: ${o.orphans.join('; ')}; yard ps: ` +
                        o.ps.map((e) => `${e.name}=${e.state}/${e.pid}`).join(' ')
                );
            }

            try {
                const r = await h.waitFor(() => load.firstSuccessSince(tUp), {
                    timeoutMs: RECOVERY_MS,
                    intervalMs: 20,
                    what: `a request to succeed after restart ${i}`,
                });
                recoveries.push(r.t1 - tUp);
            } catch (e) {
                recoveryFails.push(`kill ${i}: ${e.message}`);
            }
        }
    } catch (e) {
        err = e;
    }
    await load.stop();

    // After the last restart every model must answer, one after the other.
    const finalAnswers = [];
    if (!err) {
        for (const m of MODELS) {
            const r = await chat(base, m, { stream: m === 'sg', agent: false, maxTokens: 5 });
            finalAnswers.push(`${m}:${r.ok ? 'ok' : r.why}`);
        }
    }
    // A graceful stop takes every engine with it.
    const finalPs = await h.ps(dir).catch(() => []);
    const finalOrph = ownership(mockEngines(ledger), finalPs).orphans;
    let evs = [];
    try {
        evs = await events(dir, { n: 100000 });
    } catch {
        // reported as zero transitions
    }
    try {
        await d.stop(15000);
    } catch (e) {
        err = err || e;
    }
    let left = [];
    try {
        await h.waitFor(() => mockEngines(ledger).length === 0, { timeoutMs: 10000, what: 'engines to stop' });
    } catch {
        left = mockEngines(ledger);
    }
    watcher.stop();

    // ---- report
    const recs = load.records;
    const by = (c) => recs.filter((r) => r.cls === c);
    const okN = by('ok').length;
    const upFails = by('up');
    const count = (to) => evs.filter((e) => e.to === to).length;
    const ctx = Object.entries(killContext)
        .map(([s, n]) => `${s} ${n}`)
        .join(', ');
    report.info(
        `kill soak: ${restarts} restarts in ${((Date.now() - started) / 1000).toFixed(0)} s; ` +
            `${watcher.seen.size} engine processes seen (at most ${watcher.maxAlive} at once); ` +
            `transitions: ${count('starting')} starting, ${count('sleeping')} sleeping, ` +
            `${count('ready')} ready, ${count('stopped')} stopped, ${count('failed')} failed; ` +
            `instance states seen just before the kills: ${ctx || 'none'}; aimed kills (logged/tried): ` +
            (Object.entries(aimed)
                .map(([w, [t, n]]) => `${w} ${n}/${t}`)
                .join(', ') || 'none')
    );
    report.info(
        `requests: ${recs.length} sent (${recs.filter((r) => r.stream).length} streaming), ${okN} ok; ` +
            `failed: ${by('down').length} sent while the daemon was down, ` +
            `${by('cut').length} in flight at a kill, ${upFails.length} sent while it was up`
    );
    if (err) report.info(`aborted: ${err.stack || err.message}`);
    const broke = [orphanFails, watcher.violations, recoveryFails, upFails, adoptFails].some((l) => l.length);
    if (broke)
        report.info(`state dir (daemon log, engine logs, yard.db): ${dir}` +
            (process.env.YARD_E2E_KEEP === '1' ? '' : ' (removed at exit; YARD_E2E_KEEP=1 keeps it)'));

    report.check(
        'kill-9: no orphaned engine after each restart',
        !err && orphanFails.length === 0 && finalOrph.length === 0,
        `${restarts}/${kills} restarts checked, ${orphanFails.length} with an orphan` +
            (finalOrph.length ? `; at the end: ${finalOrph.join('; ')}` : '') +
            (orphanFails.length ? `; ${orphanFails.slice(0, 3).join(' | ')}` : '')
    );
    report.check(
        'kill-9: no engine started twice',
        watcher.violations.length === 0 && watcher.samples > 0,
        `${watcher.samples} samples of the engine processes, ` +
            `${watcher.violations.length} with two engines for one model` +
            (watcher.violations.length ? `; first: ${watcher.violations.slice(0, 3).join(' | ')}` : '')
    );
    report.check(
        'kill-9: no sleeping engine adopted as ready',
        !err && adoptFails.length === 0,
        `${restarts} adoptions checked against the engines' /is_sleeping, ` +
            `${adoptFails.length} ready while asleep` +
            ` (${awakeButSleeping} adopted sleeping while awake: harmless)` +
            (adoptFails.length ? `; ${adoptFails.slice(0, 3).join(' | ')}` : '')
    );
    report.check(
        'kill-9: store intact (PRAGMA integrity_check)',
        !err && storeFails.length === 0 && restarts === kills,
        `${restarts - storeFails.length}/${kills} checks ok` +
            (storeFails.length ? `; ${storeFails.slice(0, 3).join(' | ')}` : '')
    );
    report.check(
        `kill-9: load recovers within ${RECOVERY_MS / 1000} s of each restart`,
        !err && recoveryFails.length === 0 && recoveries.length === kills &&
            finalAnswers.every((a) => a.endsWith(':ok')),
        `${recoveries.length}/${kills} recovered; first success after restart: median ${ms(median(recoveries))}, ` +
            `p90 ${ms(percentile(recoveries, 90))}, max ${ms(Math.max(...recoveries, 0))}; ` +
            `every model answers at the end: ${finalAnswers.join(' ') || 'not checked'}` +
            (recoveryFails.length ? `; ${recoveryFails.slice(0, 3).join(' | ')}` : '')
    );
    const reasons = {};
    for (const r of upFails) {
        const k = `${r.model}: ${r.why.replace(/\d+ ms/, 'N ms').slice(0, 160)}`;
        reasons[k] = (reasons[k] || 0) + 1;
    }
    report.check(
        'kill-9: no request fails while the daemon is up',
        upFails.length === 0,
        `${upFails.length} of ${recs.length - by('down').length - by('cut').length} failed` +
            (upFails.length
                ? `; ${Object.entries(reasons)
                      .sort((a, b) => b[1] - a[1])
                      .slice(0, 5)
                      .map(([k, n]) => `${n}x ${k}`)
                      .join(' | ')}`
                : '')
    );
    report.check(
        'kill-9: SIGTERM at the end stops every engine',
        left.length === 0,
        left.length ? `left running: ${left.map((e) => `${e.pid} (${e.name})`).join(', ')}` : 'no engine left'
    );
    return { dir };
}
