// bench/run's body: runs the sections, prints the table, writes
// bench/results/latest.json (and latest.md, the same table in Markdown).
// Usage and knobs: bench/run --help, docs/bench.md.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT, cleanup, cleanupSync, log } from './util.mjs';
import { runProxy } from './proxy.mjs';
import { runStream } from './stream.mjs';
import { runReady } from './ready.mjs';
import { runSwitch } from './switch.mjs';
import { runScan } from './scan.mjs';
import { runFootprint } from './footprint.mjs';
import { runReplicas } from './replicas.mjs';
import { runLlama } from './llama.mjs';
import { runCloud } from './cloud.mjs';
import { runSlurm } from './slurm.mjs';
import { runSessions } from './sessions.mjs';
import { runPod } from './pod.mjs';
import { table, budgets } from './report.mjs';

// The e2e libraries some sections import register no node:test hooks here.
globalThis.yardBench = true;

const SECTIONS = [
    'proxy',
    'stream',
    'ready',
    'switch',
    'scan',
    'footprint',
    'replicas',
    'pod',
    'llama',
    'cloud',
    'slurm',
    'sessions',
];

function usage() {
    return `usage: bench/run [--quick] [--only SECTION[,SECTION...]] [--out FILE]

Sections: ${SECTIONS.join(', ')} (all by default, in that order).
--quick   short rounds and fewer of them, to try the bench (figures not for the README)
--out     where the JSON goes (default bench/results/latest.json)

Environment (defaults; --quick lowers those not set):
  BENCH_ROUNDS=5            rounds of the interleaved comparisons (proxy, stream, footprint, replicas)
  BENCH_SECONDS=5           throughput run per target and round (proxy, replicas)
  BENCH_LAT_SECONDS=3       one-connection latency run per target and round (proxy, replicas)
  BENCH_CONNECTIONS=32      wrk connections for the throughput runs
  BENCH_STREAMS=1000        concurrent SSE streams, the large set
  BENCH_STREAM_TOKENS=150   tokens per stream in it
  BENCH_STREAMS_FEW=100     concurrent SSE streams, the small set
  BENCH_STREAM_TOKENS_FEW=60 tokens per stream in it
  BENCH_STREAM_RATE=20      tokens per second per stream (both sets)
  BENCH_STARTS=50           starts per engine flavor (readiness detection)
  BENCH_READY_LOAD_MS=200   mock load time for those starts
  BENCH_SWITCH_ROUNDS=10    swap rounds (each: one restart, one wake)
  BENCH_SWITCH_LOAD_MS=1000 the swapped engines' load time
  BENCH_SWITCH_WAKE_MS=200  their wake time
  BENCH_SCAN_ROUNDS=31      scan_bench rounds per shape and size
  BENCH_SCAN_MIB=16         MiB scanned per scan_bench round
  BENCH_SETTLE_MS=1000      idle time before the daemon's RSS is read
  BENCH_REPLICA_MS=50       the replicas section's engine time per request (10 tokens)
  BENCH_REPLICA_CLIENTS=8   its concurrent clients, the same for 1, 2 and 4 replicas
  BENCH_POD_ROUNDS=3        pod: rounds of the pod path (BENCH_SECONDS, BENCH_LAT_SECONDS, BENCH_CONNECTIONS)
  BENCH_LLAMA_ROUNDS=5      llama: direct starts, and switch rounds (each: two switches)
  BENCH_CLOUD_ROUNDS=5      cloud: rents (each: a machine with an OCI error, then one that serves)
  BENCH_SLURM_ROUNDS=5      slurm: starts of a model as a job (then one walltime renewal)
  BENCH_SESSION_EXECS=200   sessions: execs of \`true\` per target and round
  BENCH_SESSION_SPACED_EXECS=40 sessions: execs a round one every BENCH_SESSION_GAP_MS=100 ms
  BENCH_SESSION_BACKUP_MIB=1024 sessions: the volume backed up (MiB of mixed files)
  BENCH_SESSION_BACKUP_ROUNDS=3 sessions: backups (and tar yardsticks)
  BENCH_KEEP=1              keep the temp dirs (daemon and engine logs)
`;
}

function params(quick) {
    const env = (k, full, q) => {
        const v = process.env[k];
        if (v !== undefined && v !== '') {
            const n = Number(v);
            if (!Number.isFinite(n) || n <= 0) throw new Error(`${k}='${v}': expected a positive number`);
            return n;
        }
        return quick ? q : full;
    };
    const rounds = env('BENCH_ROUNDS', 5, 2);
    const replicaClients = env('BENCH_REPLICA_CLIENTS', 8, 8);
    if (!Number.isInteger(replicaClients) || replicaClients < 4)
        throw new Error(
            `BENCH_REPLICA_CLIENTS='${replicaClients}': 4 replicas need 4 clients to keep them busy; ` +
                'give an integer of 4 or more (default 8)'
        );
    return {
        quick,
        proxy: {
            rounds,
            seconds: env('BENCH_SECONDS', 5, 1),
            latSeconds: env('BENCH_LAT_SECONDS', 3, 1),
            connections: env('BENCH_CONNECTIONS', 32, 32),
        },
        stream: {
            rounds,
            streams: env('BENCH_STREAMS', 1000, 1000),
            tokens: env('BENCH_STREAM_TOKENS', 150, 40),
            fewStreams: env('BENCH_STREAMS_FEW', 100, 100),
            fewTokens: env('BENCH_STREAM_TOKENS_FEW', 60, 20),
            rate: env('BENCH_STREAM_RATE', 20, 20),
            rampMs: 1000,
        },
        ready: { starts: env('BENCH_STARTS', 50, 5), loadMs: env('BENCH_READY_LOAD_MS', 200, 200) },
        switch: {
            rounds: env('BENCH_SWITCH_ROUNDS', 2 * rounds, 2),
            loadMs: env('BENCH_SWITCH_LOAD_MS', 1000, 1000),
            wakeMs: env('BENCH_SWITCH_WAKE_MS', 200, 200),
        },
        scan: { rounds: env('BENCH_SCAN_ROUNDS', 31, 5), mib: env('BENCH_SCAN_MIB', 16, 4) },
        footprint: { rounds, settleMs: env('BENCH_SETTLE_MS', 1000, 300), models: 1000 },
        replicas: {
            rounds,
            seconds: env('BENCH_SECONDS', 5, 2),
            latSeconds: env('BENCH_LAT_SECONDS', 3, 1),
            clients: replicaClients,
            requestMs: env('BENCH_REPLICA_MS', 50, 50),
            tokens: 10,
        },
        pod: {
            rounds: env('BENCH_POD_ROUNDS', 3, 1),
            seconds: env('BENCH_SECONDS', 5, 1),
            latSeconds: env('BENCH_LAT_SECONDS', 3, 1),
            connections: env('BENCH_CONNECTIONS', 32, 32),
        },
        llama: { rounds: env('BENCH_LLAMA_ROUNDS', 5, 2) },
        cloud: { rounds: env('BENCH_CLOUD_ROUNDS', 5, 2) },
        slurm: { rounds: env('BENCH_SLURM_ROUNDS', 5, 2) },
        sessions: {
            rounds,
            execs: env('BENCH_SESSION_EXECS', 200, 50),
            spacedExecs: env('BENCH_SESSION_SPACED_EXECS', 40, 10),
            gapMs: env('BENCH_SESSION_GAP_MS', 100, 100),
            backupMiB: env('BENCH_SESSION_BACKUP_MIB', 1024, 128),
            backupRounds: env('BENCH_SESSION_BACKUP_ROUNDS', 3, 1),
        },
    };
}

/** stdout, else stderr (nginx -v writes there), of a short command; null if it cannot run. */
function sh(cmd, args) {
    const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.error) return null;
    return (r.stdout || '').trim() || (r.stderr || '').trim();
}

function machine() {
    const cpu = os.cpus()[0];
    return {
        cpus: os.cpus().length,
        cpu_model: cpu ? cpu.model : null,
        mem_mib: Math.round(os.totalmem() / 1048576),
        kernel: os.release(),
        loadavg_at_start: os.loadavg().map((x) => Math.round(x * 100) / 100),
        wrk: (sh('wrk', ['-v']) || '').split('\n')[0],
        nginx: sh('nginx', ['-v']),
        node: process.version,
    };
}

async function main() {
    const argv = process.argv.slice(2);
    let quick = false;
    let only = SECTIONS;
    let outPath = path.join(ROOT, 'bench/results/latest.json');
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--quick') quick = true;
        else if (a === '--only' && argv[i + 1]) {
            only = argv[++i].split(',').filter(Boolean);
            const bad = only.filter((s) => !SECTIONS.includes(s));
            if (bad.length) throw new Error(`unknown section '${bad[0]}'; sections: ${SECTIONS.join(', ')}`);
        } else if (a === '--out' && argv[i + 1]) outPath = path.resolve(argv[++i]);
        else if (a === '-h' || a === '--help') {
            process.stdout.write(usage());
            return 0;
        } else {
            process.stderr.write(`bench/run: unknown argument '${a}'\n${usage()}`);
            return 2;
        }
    }
    const p = params(quick);
    const started = Date.now();
    const result = {
        when: new Date().toISOString(),
        commit: sh('git', ['rev-parse', '--short', 'HEAD']),
        dirty: (sh('git', ['status', '--porcelain', '--untracked-files=no']) || '') !== '',
        machine: machine(),
        params: p,
        sections: only,
    };
    const failures = {};
    const runners = {
        proxy: async () => (result.proxy = await runProxy(p.proxy)),
        stream: async () => (result.stream = await runStream(p.stream)),
        ready: async () => (result.ready_detect_ms = await runReady(p.ready)),
        switch: async () => (result.switch_overhead_ms = await runSwitch(p.switch)),
        scan: async () => (result.scan_us = await runScan(p.scan)),
        footprint: async () => {
            const f = await runFootprint(p.footprint);
            result.idle_rss_kib = f.idle_rss_kib;
            result.idle_rss_kib_min = f.idle_rss_kib_min;
            result.idle_rss_kib_max = f.idle_rss_kib_max;
            result.startup_ms = f.startup_ms;
            result.startup_ms_min = f.startup_ms_min;
            result.startup_ms_max = f.startup_ms_max;
            result.footprint = f;
        },
        replicas: async () => (result.replicas = await runReplicas(p.replicas)),
        pod: async () => (result.pod = await runPod(p.pod)),
        llama: async () => (result.llama = await runLlama(p.llama)),
        cloud: async () => (result.cloud = await runCloud(p.cloud)),
        slurm: async () => (result.slurm = await runSlurm(p.slurm)),
        sessions: async () => (result.sessions = await runSessions(p.sessions)),
    };
    for (const s of SECTIONS.filter((x) => only.includes(x))) {
        const t0 = Date.now();
        log(`== ${s}`);
        try {
            await runners[s]();
        } catch (e) {
            failures[s] = String(e && e.stack ? e.stack : e);
            log(`section ${s} failed: ${e && e.message ? e.message : e}`);
        }
        await cleanup();
        log(`== ${s} took ${Math.round((Date.now() - t0) / 1000)} s`);
    }
    result.seconds = Math.round((Date.now() - started) / 1000);
    if (Object.keys(failures).length) result.failures = failures;
    result.budgets = budgets(result);

    fs.mkdirSync(path.dirname(outPath), { recursive: true });
    fs.writeFileSync(outPath, JSON.stringify(result, null, 2) + '\n');
    const md = table(result, 'markdown');
    fs.writeFileSync(outPath.replace(/\.json$/, '') + '.md', md);
    process.stdout.write('\n' + table(result, 'text') + '\n');
    process.stdout.write(`wrote ${path.relative(process.cwd(), outPath)} (${result.seconds} s)\n`);
    if (Object.keys(failures).length) {
        for (const [s, e] of Object.entries(failures)) process.stdout.write(`section ${s} FAILED: ${e.split('\n')[0]}\n`);
        return 1;
    }
    return 0;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
        cleanupSync();
        process.exit(130);
    });
}
process.on('exit', () => cleanupSync());

main().then(
    (code) => process.exit(code),
    (e) => {
        process.stderr.write(`bench/run: ${e && e.message ? e.message : e}\n`);
        process.exit(1);
    }
);
