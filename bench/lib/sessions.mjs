// Section "sessions": `yard serve` with a session pool (real bubblewrap, the
// commands run as nobody). One session; then
//   exec:   BENCH_SESSION_EXECS commands `true` a round through
//           POST /v1/sessions/ID/exec ("stream": false, one keep-alive
//           connection), each timed from sending the request to the whole
//           answer; beside them, the yardsticks spawned by this process and
//           timed from spawn to exit: `/bin/sh -c true` (what a process costs
//           on this machine now) and bwrap with the arguments of the session's
//           own sandbox (read from its command line) around `/bin/sh -c true`,
//           as the session's user (a fresh sandbox per command); and
//           BENCH_SESSION_SPACED_EXECS through yard again, one every
//           BENCH_SESSION_GAP_MS, as an agent's commands come (a quiet
//           moment makes some kernel work slow: a cgroup.procs write);
//   backup: the session's volume filled with BENCH_SESSION_BACKUP_MIB of
//           mixed files (many small text files, some medium, a few large ones
//           compressible and not; made from a seeded PRNG before any timing),
//           then POST /v1/sessions/ID/backup timed to its answer (the archive
//           is complete, synced and renamed then), and beside it GNU tar of
//           the same tree into a zstd archive, synced.
// The targets of a round alternate, the order rotated round by round.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawn } from 'node:child_process';
import {
    YARD_BIN,
    MARKER,
    start,
    run,
    tmpdir,
    freePort,
    tcpAccepts,
    waitFor,
    monoNs,
    percentile,
    summary,
    put,
    rotate,
    round,
    sleep,
    log,
} from './util.mjs';

const NOBODY = 65534;

/** A 32-bit xorshift, deterministic from seed. */
function prng(seed) {
    let x = seed >>> 0 || 0x9e3779b9;
    return () => {
        x ^= x << 13;
        x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        return x;
    };
}

/** n bytes that do not compress: xorshift words. */
function noise(next, n) {
    const words = new Uint32Array(Math.ceil(n / 4));
    for (let i = 0; i < words.length; i++) words[i] = next();
    return Buffer.from(words.buffer, 0, n);
}

const WORDS = (
    'the of and to in is that for it as with was on be by this are or from at an which not have ' +
    'request model session engine token yard backup stream config error return const static struct ' +
    'int char void if else while for size_t buf len path dir file read write open close ok value ' +
    'key list map node info warn debug started stopped ready failed retry timeout after before'
).split(' ');

/** About n bytes of text, source- and log-like (compresses about 4x with zstd -3). */
function text(next, n) {
    const parts = [];
    let len = 0;
    while (len < n) {
        let line;
        if (next() % 3 === 0) {
            const t = next();
            const two = (v) => String(v).padStart(2, '0');
            line = `2026-12-07T${two(t % 24)}:${two((t >>> 5) % 60)}:${two((t >>> 11) % 60)}Z info  worker ${t % 97}: `;
        } else line = ' '.repeat(4 * (next() % 4));
        const k = 3 + (next() % 12);
        for (let i = 0; i < k; i++) line += WORDS[next() % WORDS.length] + (i + 1 < k ? ' ' : '');
        if (next() % 5 === 0) line += ` ${next() % 100000}`;
        line += '\n';
        parts.push(line);
        len += line.length;
    }
    return Buffer.from(parts.join('')).subarray(0, n);
}

/**
 * Fills dir with mib MiB of files: 1/8 small text files (1 to 16 KiB, 100 to a
 * directory), 1/8 medium (128 KiB to 1 MiB, half text, half noise), 3/8 large
 * noise and 3/8 large text (files of 128 MiB at most). Deterministic.
 * Returns { files, bytes, dirs }.
 */
function fill(dir, mib) {
    const next = prng(0x5e551075);
    const total = mib * 1048576;
    let files = 0;
    let bytes = 0;
    let dirs = 0;
    const put1 = (rel, buf) => {
        const p = path.join(dir, rel);
        fs.mkdirSync(path.dirname(p), { recursive: true });
        fs.writeFileSync(p, buf);
        files++;
        bytes += buf.length;
    };
    // small: text, a directory per 100
    const small = total / 8;
    for (let done = 0, i = 0; done < small; i++) {
        const n = Math.min(small - done, 1024 + (next() % (15 * 1024)));
        if (i % 100 === 0) dirs++;
        put1(`src/d${String(Math.floor(i / 100)).padStart(4, '0')}/f${i}.txt`, text(next, n));
        done += n;
    }
    // medium: 128 KiB to 1 MiB, text and noise in turn
    const medium = total / 8;
    for (let done = 0, i = 0; done < medium; i++) {
        const n = Math.min(medium - done, 131072 + (next() % (896 * 1024)));
        put1(`data/m${i}.${i % 2 ? 'bin' : 'log'}`, i % 2 ? noise(next, n) : text(next, n));
        done += n;
    }
    // large: noise, and text made of a 4 MiB pool taken at random offsets
    const large = (total * 3) / 8;
    const pool = text(next, 4 << 20);
    for (const kind of ['bin', 'log']) {
        for (let done = 0, i = 0; done < large; i++) {
            const n = Math.min(large - done, 128 << 20);
            let buf;
            if (kind === 'bin') buf = noise(next, n);
            else {
                const pieces = [];
                for (let got = 0; got < n; ) {
                    const off = next() % (pool.length - 65536);
                    const k = Math.min(n - got, 4096 + (next() % 61440));
                    pieces.push(pool.subarray(off, off + k));
                    got += k;
                }
                buf = Buffer.concat(pieces);
            }
            put1(`large/l${i}.${kind}`, buf);
            done += n;
        }
    }
    return { files, bytes, dirs: dirs + 3 };
}

/** One request on a keep-alive agent, timed send -> whole answer. */
function post(agent, port, p, body) {
    return new Promise((resolve, reject) => {
        const payload = JSON.stringify(body);
        const t0 = monoNs();
        const req = http.request(
            {
                host: '127.0.0.1',
                port,
                method: 'POST',
                path: p,
                agent,
                headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) },
            },
            (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () =>
                    resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString(), ms: (monoNs() - t0) / 1e6 })
                );
                res.on('error', reject);
            }
        );
        req.on('error', reject);
        req.end(payload);
    });
}

/** Spawn -> exit of cmd, in ms. */
function spawnTimed(cmd, args, opts = {}) {
    return new Promise((resolve, reject) => {
        const t0 = monoNs();
        const c = spawn(cmd, args, {
            stdio: 'ignore',
            env: { PATH: '/usr/bin:/bin', BENCH_MARKER: MARKER },
            ...opts,
        });
        c.on('error', reject);
        c.on('exit', (code, sig) => {
            const ms = (monoNs() - t0) / 1e6;
            if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')}: exit ${code} signal ${sig}`));
            else resolve(ms);
        });
    });
}

/** The session's sandbox: bwrap's arguments up to its program, from /proc (null when none runs). */
function sandboxArgs(volume) {
    for (const d of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(d)) continue;
        let argv;
        try {
            argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
        } catch {
            continue;
        }
        if (!/(^|\/)bwrap$/.test(argv[0]) || !argv.includes(volume)) continue;
        const out = [];
        for (let i = 1; i < argv.length; i++) {
            if (argv[i] === '--') break;
            if (argv[i] === '--info-fd') {
                i++;
                continue;
            }
            out.push(argv[i]);
        }
        return out;
    }
    return null;
}

async function startDaemon(p) {
    const dir = tmpdir('yb-sess-');
    fs.chmodSync(dir, 0o755); // the commands' user must reach the volumes
    const port = await freePort();
    const root = path.join(dir, 'vols');
    const backups = path.join(dir, 'backups');
    fs.mkdirSync(path.join(dir, 'cfg'));
    const config = path.join(dir, 'cfg', 'yard.yaml');
    fs.writeFileSync(
        config,
        `listen: 127.0.0.1:${port}\nmodels: {}\nsessions:\n  root: ${root}\n  user: nobody\n` +
            `  backup_after: 1h\n  backup_dir: ${backups}\n`
    );
    const stateDir = path.join(dir, 'state');
    const proc = start(YARD_BIN, ['serve', '-c', config, '--state-dir', stateDir], {
        logPath: path.join(dir, 'daemon.log'),
    });
    await waitFor(
        async () => {
            if (!proc.alive()) throw new Error(`yard serve exited; see ${path.join(dir, 'daemon.log')}`);
            return tcpAccepts(port);
        },
        { timeoutMs: 10000, what: `yard listening on ${port}` }
    );
    return { dir, port, root, backups, proc };
}

function stats(samples) {
    return {
        p50: percentile(samples, 50),
        p99: percentile(samples, 99),
        min: Math.min(...samples),
        max: Math.max(...samples),
    };
}

export async function runSessions(p) {
    if (process.getuid && process.getuid() !== 0)
        return { skipped: 'needs root (the commands run as nobody, the sessions in cgroups)' };
    const bw = await run('bwrap', ['--ro-bind', '/', '/', '--unshare-pid', '--', '/bin/true']).catch((e) => ({
        code: -1,
        stderr: String(e),
    }));
    if (bw.code !== 0) return { skipped: `bwrap cannot make its namespaces here: ${bw.stderr.trim().split('\n')[0]}` };

    const d = await startDaemon(p);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const id = 'bench';
    let r = await post(agent, d.port, '/v1/sessions', { id });
    if (r.status !== 201) throw new Error(`POST /v1/sessions: ${r.status} ${r.body}`);
    const rec = JSON.parse(r.body);
    const volume = rec.volume;
    const execOnce = async () => {
        const a = await post(agent, d.port, `/v1/sessions/${id}/exec`, { cmd: 'true', stream: false });
        if (a.status !== 200 || JSON.parse(a.body).code !== 0) throw new Error(`exec: ${a.status} ${a.body}`);
        return a.ms;
    };
    for (let i = 0; i < 5; i++) await execOnce(); // the sandbox starts with the first

    const args = sandboxArgs(volume);
    const bwrapArgs = args
        ? [...args, '--', '/bin/sh', '-c', 'true']
        : [
              '--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/tmp',
              '--tmpfs', d.root, '--bind', volume, volume, '--chdir', volume,
              '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--unshare-net',
              '--', '/bin/sh', '-c', 'true',
          ];
    const as = { uid: NOBODY, gid: NOBODY, cwd: volume };
    const targets = {
        yard: execOnce,
        bwrap: () => spawnTimed('bwrap', bwrapArgs, as),
        sh: () => spawnTimed('/bin/sh', ['-c', 'true'], as),
        spaced: execOnce,
    };
    const per = { yard: [], bwrap: [], sh: [], spaced: [] };
    for (let k = 0; k < p.rounds; k++) {
        for (const t of rotate(Object.keys(targets), k)) {
            const v = [];
            const n = t === 'spaced' ? p.spacedExecs : p.execs;
            for (let i = 0; i < n; i++) {
                if (t === 'spaced') await sleep(p.gapMs); // an agent's pace: quiet between commands
                v.push(await targets[t]());
            }
            per[t].push(stats(v));
        }
        log(
            `sessions round ${k + 1}/${p.rounds}: exec p50 ${per.yard[k].p50.toFixed(2)} ms, ` +
                `spaced ${per.spaced[k].p50.toFixed(2)} ms, bwrap ${per.bwrap[k].p50.toFixed(2)} ms, ` +
                `sh ${per.sh[k].p50.toFixed(2)} ms`
        );
    }
    const out = {
        execs: p.execs,
        spaced_execs: p.spacedExecs,
        gap_ms: p.gapMs,
        rounds: p.rounds,
        backup_rounds: p.backupRounds,
    };
    out.bwrap_args = args ? "the session's sandbox" : 'docs/sessions.md (no sandbox found)';
    const names = { yard: 'exec', spaced: 'exec_spaced', bwrap: 'bwrap_direct', sh: 'sh_direct' };
    for (const [t, rounds] of Object.entries(per)) {
        const o = {};
        for (const k of ['p50', 'p99', 'min', 'max']) put(o, `${k}_ms`, summary(rounds.map((x) => x[k])), 2);
        out[names[t]] = o;
    }
    // the budget's figure: the worse p50 of a round, back to back or spaced, then the median
    put(out, 'exec_p50_ms', summary(per.yard.map((x, k) => Math.max(x.p50, per.spaced[k].p50))), 2);
    out.exec_minus_bwrap_p50_ms = round(out.exec.p50_ms - out.bwrap_direct.p50_ms, 2);

    // backup
    const t0 = Date.now();
    const made = fill(volume, p.backupMiB);
    log(`sessions: ${made.files} files, ${(made.bytes / 1048576).toFixed(0)} MiB made in ${Date.now() - t0} ms`);
    await run('sync', []);
    const yardstick = path.join(d.dir, 'tar.tar.zst');
    const backupTargets = {
        yard: async () => {
            const a = await post(agent, d.port, `/v1/sessions/${id}/backup`, {});
            if (a.status !== 200) throw new Error(`backup: ${a.status} ${a.body}`);
            const b = JSON.parse(a.body).backup;
            fs.rmSync(b.path, { force: true });
            return { s: a.ms / 1000, bytes: b.bytes };
        },
        tar: async () => {
            const t = monoNs();
            const x = await run('sh', [
                '-c',
                'tar --zstd --format=pax --one-file-system -C "$1" -cf "$2" . && sync "$2"',
                'sh',
                volume,
                yardstick,
            ]);
            const s = (monoNs() - t) / 1e9;
            if (x.code !== 0) throw new Error(`tar: ${x.stderr}`);
            const bytes = fs.statSync(yardstick).size;
            fs.rmSync(yardstick, { force: true });
            return { s, bytes };
        },
    };
    const bk = { yard: [], tar: [] };
    for (let k = 0; k < p.backupRounds; k++) {
        for (const t of rotate(Object.keys(backupTargets), k)) bk[t].push(await backupTargets[t]());
        log(
            `sessions backup round ${k + 1}/${p.backupRounds}: yard ${bk.yard[k].s.toFixed(2)} s, ` +
                `tar ${bk.tar[k].s.toFixed(2)} s`
        );
    }
    out.backup_mib = round(made.bytes / 1048576, 0);
    out.backup_files = made.files;
    for (const [t, v] of Object.entries(bk)) {
        const o = {};
        put(o, 'seconds', summary(v.map((x) => x.s)), 2);
        put(o, 'mb_per_s', summary(v.map((x) => made.bytes / 1e6 / x.s)), 0);
        o.archive_mib = round(v[0].bytes / 1048576, 0);
        out[t === 'yard' ? 'backup' : 'tar_direct'] = o;
    }
    out.backup_s = out.backup.seconds;
    out.backup_s_min = out.backup.seconds_min;
    out.backup_s_max = out.backup.seconds_max;
    agent.destroy();
    await d.proc.stop();
    return out;
}
