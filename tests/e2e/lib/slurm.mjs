// A real single-node Slurm cluster for the Slurm tier: Debian's slurmctld and
// slurmd (slurm-wlm 22.05) with a private munged, all under one temp dir, found by
// clients through SLURM_CONF. Nothing system-wide is read or written: the cluster
// has its own munge key and socket, state, spool, logs and pid files, and listens
// on free ports, so two of them (or a system Slurm) run side by side.
//
//   const s = await startSlurm({ gpus: 2 });
//   if (s.skipReason) return t.skip(s.skipReason);
//   try {
//       const id = await s.sbatch(['--gres=gpu:1', '--time=1'], '#!/bin/sh\nsleep 60\n');
//       await s.waitJob(id, 'RUNNING');
//   } finally {
//       await s.stop();
//   }
//
// The node is this machine (NodeAddr 127.0.0.1) under its own host name; its GPUs
// are GRES backed by character-device files made with mknod in the temp dir (slurmd
// refuses plain files), so `--gres=gpu:N` jobs get CUDA_VISIBLE_DEVICES. There is no
// slurmdbd: finished jobs stay visible to `scontrol show job` for MinJobAge and are
// appended to a jobcomp/filetxt file. docs/testing.md, "Slurm tier", has the rest.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import dns from 'node:dns/promises';
import { spawn, spawnSync } from 'node:child_process';
import * as h from './harness.mjs';

const { assert } = h;
const KEEP = process.env.YARD_E2E_KEEP === '1';

export const SLURMCTLD = '/usr/sbin/slurmctld';
export const SLURMD = '/usr/sbin/slurmd';
export const MUNGED = '/usr/sbin/munged';
export const MUNGEKEY = '/usr/sbin/mungekey';
const CLIENTS = ['sbatch', 'squeue', 'scancel', 'scontrol', 'sinfo'];

// Clusters this process started and has not stopped: stopped at the end as a
// backstop (a test stops its own, before the harness looks for leftovers).
const live = new Set();
h.atEnd(async () => {
    for (const s of [...live]) await s.stop();
});
process.on('exit', () => {
    for (const s of [...live]) s.killNow();
});

function onPath(cmd) {
    return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

/** Why a Slurm cluster cannot be started here, or null. */
export function slurmSkipReason() {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
        return 'not running as root (slurmd runs jobs as their user and must be root)';
    }
    for (const bin of [SLURMCTLD, SLURMD]) {
        if (!fs.existsSync(bin)) return `'${bin}' not installed (apt-get install slurm-wlm)`;
    }
    for (const bin of [MUNGED, MUNGEKEY]) {
        if (!fs.existsSync(bin)) return `'${bin}' not installed (apt-get install munge)`;
    }
    for (const cmd of CLIENTS) {
        if (!onPath(cmd)) return `'${cmd}' not in PATH (apt-get install slurm-client)`;
    }
    return null;
}

function run(cmd, args) {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.trim()}`);
    return r.stdout;
}

/** Minutes as Slurm writes a time limit: a number, or "UNLIMITED". */
function minutes(v, what) {
    if (v === 'UNLIMITED') return v;
    if (!Number.isInteger(v) || v < 1) {
        throw new Error(`startSlurm: ${what} must be a whole number of minutes >= 1, got ${v}`);
    }
    return String(v);
}

/** This machine's host name when it resolves to a local address, else localhost.
 *  It names the node (jobs see it in SLURMD_NODENAME and `hostname`). */
async function localNodeName() {
    const name = os.hostname().split('.')[0];
    try {
        const addrs = await dns.lookup(name, { all: true });
        const local = new Set(
            Object.values(os.networkInterfaces())
                .flat()
                .map((i) => i.address)
        );
        if (addrs.some((a) => local.has(a.address) || a.address.startsWith('127.'))) return name;
    } catch {
        // does not resolve
    }
    return 'localhost';
}

/** Reads `Key=Value Key=Value ...` (scontrol's one-line form) into an object. Values
 *  may hold spaces only where the next word has no '=' (Command=..., Reason=...). */
export function parseScontrol(line) {
    const out = {};
    let key = null;
    for (const word of line.trim().split(/\s+/)) {
        const eq = word.indexOf('=');
        if (eq > 0 && /^[A-Za-z][A-Za-z0-9_:/]*$/.test(word.slice(0, eq))) {
            key = word.slice(0, eq);
            out[key] = word.slice(eq + 1);
        } else if (key) {
            out[key] += ` ${word}`;
        }
    }
    return out;
}

// squeue -o fields, in order: id, name, state (long), reason, node list, time
// limit, time left, end time, user. '|' never appears in these.
const SQUEUE_FORMAT = '%i|%j|%T|%r|%N|%l|%L|%e|%u';
function parseSqueue(text) {
    return text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => {
            const [id, name, state, reason, nodes, timeLimit, timeLeft, endTime, user] = l.split('|');
            return { id, name, state, reason, nodes, timeLimit, timeLeft, endTime, user };
        });
}

/** Pids whose environment holds every one of needles (NUL-separated entries). */
function pidsWithEnv(needles) {
    const out = [];
    for (const e of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(e)) continue;
        const pid = Number(e);
        if (pid === process.pid) continue;
        let env;
        try {
            env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
        } catch {
            continue;
        }
        if (needles.every((n) => env.some((v) => (n.endsWith('=') ? v.startsWith(n) : v === n)))) {
            if (h.pidAlive(pid)) out.push(pid);
        }
    }
    return out;
}

/** Whether pid holds a TCP socket listening on port (any local address). */
function listensOn(pid, port) {
    const inodes = new Set();
    const hex = port.toString(16).toUpperCase().padStart(4, '0');
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
        let text = '';
        try {
            text = fs.readFileSync(table, 'utf8');
        } catch {
            continue;
        }
        for (const line of text.split('\n').slice(1)) {
            const f = line.trim().split(/\s+/);
            // local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 the inode
            if (f.length > 9 && f[1].endsWith(`:${hex}`) && f[3] === '0A') inodes.add(f[9]);
        }
    }
    if (inodes.size === 0) return false;
    let fds = [];
    try {
        fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
        return false;
    }
    return fds.some((fd) => {
        try {
            const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
            return m && inodes.has(m[1]);
        } catch {
            return false;
        }
    });
}

function killPid(pid, sig) {
    try {
        process.kill(pid, sig);
    } catch {
        // gone
    }
}

/**
 * Starts a cluster. Options (all optional):
 *   gpus      GPUs the node has (GRES gpu, default 2; 0 for none)
 *   cpus      CPUs the node declares (default 8, more than the machine may have:
 *             SlurmdParameters=config_overrides lets it)
 *   maxTime   the partition's MaxTime in minutes (default 10)
 *   defaultTime  a job's time limit when it gives none (default maxTime)
 *   partition the partition's name (default "debug")
 *   minJobAge seconds a finished job stays in squeue/scontrol (default 300)
 *   killWait  seconds from SIGTERM to SIGKILL at a time limit or scancel (default 5)
 * Resolves { skipReason } alone when this machine cannot run Slurm (see
 * slurmSkipReason()), else the cluster (see the fields below). Throws when a daemon
 * fails to start, with the end of its log.
 */
export async function startSlurm(opts = {}) {
    const skipReason = slurmSkipReason();
    if (skipReason) return { skipReason };
    const {
        gpus = 2,
        cpus = 8,
        maxTime = 10,
        partition = 'debug',
        minJobAge = 300,
        killWait = 5,
    } = opts;
    const defaultTime = opts.defaultTime ?? maxTime;
    if (!Number.isInteger(gpus) || gpus < 0) throw new Error(`startSlurm: gpus must be >= 0, got ${gpus}`);
    if (!Number.isInteger(cpus) || cpus < 1) throw new Error(`startSlurm: cpus must be >= 1, got ${cpus}`);
    if (!/^[A-Za-z][A-Za-z0-9_-]*$/.test(partition)) {
        throw new Error(`startSlurm: partition '${partition}' is not a plain name`);
    }
    for (const [k, v] of Object.entries({ minJobAge, killWait })) {
        if (!Number.isInteger(v) || v < 0) {
            throw new Error(`startSlurm: ${k} must be whole seconds >= 0, got ${v}`);
        }
    }
    const maxTimeText = minutes(maxTime, 'maxTime');
    const defaultTimeText = minutes(defaultTime, 'defaultTime');

    const started = Date.now();
    const dir = h.tmpdir('yard-slurm-');
    const nodeName = await localNodeName();
    const cluster = `yard${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    const conf = path.join(dir, 'slurm.conf');
    for (const sub of ['munge', 'state', 'spool', 'log', 'run', 'dev']) {
        fs.mkdirSync(path.join(dir, sub), { mode: 0o700 });
    }

    // GPU "devices": character devices nothing opens (the numbers of /dev/null).
    const gpuFiles = [];
    for (let i = 0; i < gpus; i++) {
        const f = path.join(dir, 'dev', `gpu${i}`);
        const r = spawnSync('mknod', ['-m', '0600', f, 'c', '1', '3'], { encoding: 'utf8' });
        if (r.status !== 0) {
            return {
                skipReason:
                    `cannot make the GPU device files slurmd needs (mknod ${f} c 1 3: ` +
                    `${(r.stderr || r.error || '').toString().trim()})`,
            };
        }
        gpuFiles.push(f);
    }

    // munge: its own key and socket (AuthInfo in slurm.conf sends every part there).
    const mungeDir = path.join(dir, 'munge');
    const mungeKey = path.join(mungeDir, 'munge.key');
    const mungeSocket = path.join(mungeDir, 'munge.socket');
    run(MUNGEKEY, ['--create', '--keyfile', mungeKey]);
    fs.chmodSync(mungeKey, 0o600);

    const plugstack = path.join(dir, 'plugstack.conf');
    fs.writeFileSync(plugstack, '');
    const jobcomp = path.join(dir, 'log', 'jobcomp.txt');
    const gresLine = gpus > 0 ? ` Gres=gpu:${gpus}` : '';
    const writeConf = (ctldPort, slurmdPort) => {
        fs.writeFileSync(
            conf,
            [
                `ClusterName=${cluster}`,
                `SlurmctldHost=${nodeName}(127.0.0.1)`,
                `SlurmctldPort=${ctldPort}`,
                `SlurmdPort=${slurmdPort}`,
                'SlurmUser=root',
                'SlurmdUser=root',
                'AuthType=auth/munge',
                'CredType=cred/munge',
                `AuthInfo=socket=${mungeSocket}`,
                `StateSaveLocation=${dir}/state`,
                `SlurmdSpoolDir=${dir}/spool`,
                `SlurmctldPidFile=${dir}/run/slurmctld.pid`,
                `SlurmdPidFile=${dir}/run/slurmd.pid`,
                `SlurmctldLogFile=${dir}/log/slurmctld.log`,
                `SlurmdLogFile=${dir}/log/slurmd.log`,
                `PlugStackConfig=${plugstack}`,
                'SlurmctldDebug=info',
                'SlurmdDebug=info',
                'SlurmdParameters=config_overrides',
                'ProctrackType=proctrack/linuxproc',
                'TaskPlugin=task/none',
                'MpiDefault=none',
                'SchedulerType=sched/backfill',
                'SelectType=select/cons_tres',
                'SelectTypeParameters=CR_Core',
                'ReturnToService=2',
                'AccountingStorageType=accounting_storage/none',
                'JobAcctGatherType=jobacct_gather/none',
                'JobCompType=jobcomp/filetxt',
                `JobCompLoc=${jobcomp}`,
                `MinJobAge=${minJobAge}`,
                `KillWait=${killWait}`,
                'InactiveLimit=0',
                'MailProg=/bin/true',
                gpus > 0 ? 'GresTypes=gpu' : '',
                `NodeName=${nodeName} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${16 * 1024}` +
                    `${gresLine} State=UNKNOWN`,
                `PartitionName=${partition} Nodes=${nodeName} Default=YES ` +
                    `MaxTime=${maxTimeText} DefaultTime=${defaultTimeText} State=UP`,
                '',
            ]
                .filter((l, i, a) => l !== '' || i === a.length - 1)
                .join('\n')
        );
    };
    if (gpus > 0) {
        fs.writeFileSync(
            path.join(dir, 'gres.conf'),
            `AutoDetect=off\n${gpuFiles.map((f) => `NodeName=${nodeName} Name=gpu File=${f}\n`).join('')}`
        );
    }

    const procs = [];
    const env = {
        SLURM_CONF: conf,
        PATH: process.env.PATH || '/usr/local/bin:/usr/bin:/bin',
    };
    // Daemons get the cluster's conf in their environment too: a stray process of
    // this cluster (a job step, a job's fork) is found by it at stop.
    const daemonEnv = { ...env };
    const logOf = (name) => path.join(dir, 'log', name);
    const tailOf = (file, n = 30) => {
        let text = '';
        try {
            text = fs.readFileSync(file, 'utf8');
        } catch {
            // not written
        }
        return text.split('\n').slice(-n).join('\n');
    };

    const munged = h.startProcess(
        MUNGED,
        [
            '--foreground',
            '--force',
            `--socket=${mungeSocket}`,
            `--key-file=${mungeKey}`,
            `--pid-file=${path.join(dir, 'run', 'munged.pid')}`,
            `--log-file=${logOf('munged.log')}`,
            `--seed-file=${path.join(mungeDir, 'munged.seed')}`,
        ],
        { env: daemonEnv, logPath: logOf('munged.out'), name: 'munged' }
    );
    procs.push(munged);
    await h.waitFor(
        async () => {
            if (munged.exited) {
                throw h.fatal(`munged exited:\n${munged.logText()}\n${tailOf(logOf('munged.log'))}`);
            }
            return h.socketAccepts(mungeSocket);
        },
        { timeoutMs: 10000, what: `munged on ${mungeSocket}` }
    );

    const s = {
        skipReason: null,
        dir,
        conf,
        env,
        cluster,
        partition,
        nodeName,
        nodeAddr: '127.0.0.1',
        gpus,
        cpus,
        maxTime,
        gpuFiles,
        jobcompFile: jobcomp,
        logs: {
            slurmctld: logOf('slurmctld.log'),
            slurmd: logOf('slurmd.log'),
            munged: logOf('munged.log'),
        },
        ctldPort: 0,
        slurmdPort: 0,
        startupMs: 0,
        procs,
        stopped: false,
    };

    /** Runs a Slurm client command against this cluster: {code, stdout, stderr}. */
    s.run = (cmd, args = [], { input, timeoutMs = 30000, env: extra = {} } = {}) =>
        new Promise((resolve, reject) => {
            // Slurm's input variables of this process (were it itself a job) stay out.
            const base = Object.fromEntries(
                Object.entries(process.env).filter(([k]) => !/^(SLURM|SBATCH|SQUEUE|SINFO|SCANCEL)_/.test(k))
            );
            const child = spawn(cmd, args, {
                env: { ...base, YARD_E2E_MARKER: h.MARKER, ...env, ...extra },
                stdio: ['pipe', 'pipe', 'pipe'],
            });
            let stdout = '';
            let stderr = '';
            child.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
            child.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
            const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
            child.on('error', (err) => {
                clearTimeout(timer);
                reject(new Error(`cannot run '${cmd}': ${err.message}`));
            });
            child.on('close', (code, signal) => {
                clearTimeout(timer);
                resolve({ code, signal, stdout, stderr });
            });
            child.stdin.on('error', () => {});
            child.stdin.end(input ?? '');
        });

    const must = async (cmd, args, o) => {
        const r = await s.run(cmd, args, o);
        if (r.code !== 0) {
            throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
        }
        return r.stdout;
    };

    /** sbatch --parsable ARGS [FILE]: the job id. script (text) is written to a file
     *  in the cluster's dir and submitted; without it, args name the script or
     *  --wrap. Throws with sbatch's message when it refuses. */
    s.sbatch = async (args = [], script, o = {}) => {
        const argv = ['--parsable', ...args];
        if (script !== undefined) {
            const file = path.join(dir, `job-${Date.now()}-${Math.random().toString(36).slice(2, 8)}.sh`);
            fs.writeFileSync(file, script, { mode: 0o755 });
            argv.push(file);
        }
        const out = (await must('sbatch', argv, o)).trim();
        const id = out.split(';')[0];
        assert.match(id, /^\d+$/, `sbatch printed '${out}', not a job id`);
        return id;
    };

    /** squeue for this cluster: [{id, name, state, reason, nodes, timeLimit,
     *  timeLeft, endTime, user}]. args are added (e.g. ['-t', 'all'], ['-j', id]). */
    s.squeue = async (args = []) =>
        parseSqueue(await must('squeue', ['-h', '-o', SQUEUE_FORMAT, ...args]));

    /** scancel ARGS: {code, stdout, stderr} (scancel of a finished job is not an error). */
    s.scancel = (args) => s.run('scancel', args);

    /** `scontrol show job -o ID` as an object (JobState, Reason, ExitCode, NodeList,
     *  StdOut, EndTime ...), or null once Slurm has forgotten the job. */
    s.job = async (id) => {
        const r = await s.run('scontrol', ['show', 'job', '-o', String(id)]);
        if (r.code !== 0) {
            if (/Invalid job id/i.test(r.stderr)) return null;
            throw new Error(`scontrol show job ${id} exited ${r.code}: ${r.stderr.trim()}`);
        }
        return parseScontrol(r.stdout.split('\n')[0]);
    };

    /** Polls `scontrol show job` until its JobState is one of states (a string or
     *  array); returns the job. A terminal state that is not wanted fails at once. */
    s.waitJob = async (id, states, { timeoutMs = 60000, intervalMs = 200 } = {}) => {
        const want = Array.isArray(states) ? states : [states];
        const terminal = [
            'COMPLETED',
            'FAILED',
            'CANCELLED',
            'TIMEOUT',
            'OUT_OF_MEMORY',
            'NODE_FAIL',
            'PREEMPTED',
            'BOOT_FAIL',
            'DEADLINE',
        ];
        let last = null;
        return h.waitFor(
            async () => {
                last = await s.job(id);
                if (!last) throw h.fatal(`job ${id} is unknown to scontrol`);
                const state = last.JobState;
                if (want.includes(state)) return last;
                if (terminal.includes(state)) {
                    throw h.fatal(
                        `job ${id} ended ${state} (Reason=${last.Reason}, ExitCode=${last.ExitCode}) ` +
                            `while waiting for ${want.join(' or ')}`
                    );
                }
                return false;
            },
            { timeoutMs, intervalMs, what: `job ${id} to be ${want.join(' or ')}` }
        );
    };

    /** The jobcomp/filetxt records so far: [{JobId, JobState, ExitCode, ...}]. */
    s.jobcomp = () => {
        let text = '';
        try {
            text = fs.readFileSync(jobcomp, 'utf8');
        } catch {
            return [];
        }
        return text
            .split('\n')
            .filter((l) => l.trim() !== '')
            .map(parseScontrol);
    };

    /** `sinfo -h -N -o '%N %T %G'` for the node: {name, state, gres}. */
    s.node = async () => {
        const out = (await must('sinfo', ['-h', '-N', '-o', '%N|%T|%G'])).trim().split('\n')[0] || '';
        const [name, state, gres] = out.split('|');
        return { name, state, gres };
    };

    /** Pids of this cluster's job processes: the batch shell and whatever it
     *  started, forks that left its process tree included (their environment
     *  carries this cluster's SLURM_CONF and a job id). slurmstepd, which has no
     *  job id in its environment, is not among them. */
    s.jobPids = () => pidsWithEnv([`SLURM_CONF=${conf}`, 'SLURM_JOB_ID=']);

    // Every process of the cluster: the daemons, job steps and job processes, found
    // by the cluster's conf in their environment.
    const clusterPids = () => pidsWithEnv([`SLURM_CONF=${conf}`]);

    /** SIGKILL to everything of the cluster now (exit path). */
    s.killNow = () => {
        for (const p of procs) p.kill('SIGKILL');
        for (const pid of clusterPids()) killPid(pid, 'SIGKILL');
        live.delete(s);
    };

    /** Stops the cluster: the daemons (SIGTERM, then SIGKILL) and every job process
     *  left, by pid; removes the dir unless YARD_E2E_KEEP=1. Safe to call twice. */
    s.stop = async () => {
        if (s.stopped) return;
        s.stopped = true;
        live.delete(s);
        // Jobs first, while slurmd can still end their steps in order.
        const jobs = s.jobPids();
        for (const pid of jobs) killPid(pid, 'SIGKILL');
        await Promise.all([...procs].reverse().map((p) => p.stop(5000)));
        // Whatever is left (a step or a fork that outlived its parent).
        try {
            await h.waitFor(
                () => {
                    const left = clusterPids();
                    for (const pid of left) killPid(pid, 'SIGKILL');
                    return left.length === 0;
                },
                { timeoutMs: 10000, intervalMs: 50, what: `the processes of Slurm cluster ${dir} to exit` }
            );
        } finally {
            if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
        }
    };

    live.add(s);
    try {
        await startDaemons(s, { writeConf, daemonEnv, logOf, tailOf, nodeName });
    } catch (err) {
        await s.stop().catch(() => {});
        throw err;
    }
    s.startupMs = Date.now() - started;
    return s;
}

/** Starts slurmctld and slurmd on free ports (new ones when another process took
 *  a port first) and waits for the node to be idle. */
async function startDaemons(s, { writeConf, daemonEnv, logOf, tailOf, nodeName }) {
    for (let attempt = 1; ; attempt++) {
        s.ctldPort = await h.freePort();
        do s.slurmdPort = await h.freePort();
        while (s.slurmdPort === s.ctldPort);
        writeConf(s.ctldPort, s.slurmdPort);
        const stamp = attempt === 1 ? '' : `-${attempt}`;
        const ctld = h.startProcess(SLURMCTLD, ['-D', '-i', '-f', s.conf], {
            env: daemonEnv,
            logPath: logOf(`slurmctld${stamp}.out`),
            name: 'slurmctld',
        });
        s.procs.push(ctld);
        const slurmd = h.startProcess(SLURMD, ['-D', '-f', s.conf, '-N', nodeName], {
            env: daemonEnv,
            logPath: logOf(`slurmd${stamp}.out`),
            name: 'slurmd',
        });
        s.procs.push(slurmd);
        const portTaken = () =>
            /Address already in use/i.test(`${tailOf(s.logs.slurmctld)}\n${tailOf(s.logs.slurmd)}`);
        try {
            await h.waitFor(
                async () => {
                    for (const [p, log] of [
                        [ctld, s.logs.slurmctld],
                        [slurmd, s.logs.slurmd],
                    ]) {
                        if (p.exited) {
                            throw h.fatal(
                                `${path.basename(log, '.log')} exited:\n${p.logText()}\n${tailOf(log)}`
                            );
                        }
                    }
                    if (portTaken()) throw h.fatal('a port was taken by another process');
                    // Ask only once both listen: a client of a controller that is
                    // not there waits about 9 s before it gives up.
                    if (!listensOn(ctld.pid, s.ctldPort) || !listensOn(slurmd.pid, s.slurmdPort)) {
                        return false;
                    }
                    const r = await s.run('sinfo', ['-h', '-N', '-o', '%T'], { timeoutMs: 10000 });
                    return r.code === 0 && r.stdout.trim() === 'idle';
                },
                {
                    timeoutMs: 60000,
                    intervalMs: 100,
                    what: `node ${nodeName} of cluster ${s.cluster} to be idle`,
                }
            );
            return;
        } catch (err) {
            // This try is given up: no need to wait for a graceful end.
            for (const p of [slurmd, ctld]) p.kill('SIGKILL');
            await Promise.all([slurmd.waitExit(5000), ctld.waitExit(5000)]);
            s.procs.splice(s.procs.indexOf(ctld), 2);
            if (portTaken() && attempt < 5) {
                fs.appendFileSync(s.logs.slurmctld, '--- port taken, starting again on other ports\n');
                fs.renameSync(s.logs.slurmctld, `${s.logs.slurmctld}.${attempt}`);
                if (fs.existsSync(s.logs.slurmd)) fs.renameSync(s.logs.slurmd, `${s.logs.slurmd}.${attempt}`);
                continue;
            }
            throw err;
        }
    }
}
