// What `make install` installs, and that each piece works where it lands:
//   - the file list under PREFIX (and under DESTDIR+PREFIX), and make uninstall
//     removing all of it
//   - the installed yard and mock-engine run; the starter config is valid, its
//     examples too, and its stand-in model serves a request from the installed
//     daemon
//   - systemd-analyze verify accepts the installed unit (skipped without it)
//   - the man pages render without warnings and name every command and option
//     of the binary and every key `yard check` accepts
//   - the bash and zsh completion: commands, each command's options (each one
//     the binary accepts, every one its help names), option values, and the
//     models and pods of the running daemon; nothing, and no error, when no
//     daemon answers or one never does
// The Debian package is checked apart, by tests/package/check-deb.sh (make test).
import { test } from 'node:test';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as h from './lib/harness.mjs';

const { assert } = h;
const SRC = h.YARD_SRC_DIR;
const ZSH_COMPLETE = path.join(SRC, 'tests/e2e/tools/zsh-complete.zsh');

/** Runs a program to its end, killed after timeoutMs: { code, signal, stdout, stderr }. */
function run(cmd, args, { env = {}, cwd, input, timeoutMs = 120000 } = {}) {
    return new Promise((resolve, reject) => {
        const p = spawn(cmd, args, {
            cwd,
            env: { ...process.env, YARD_E2E_MARKER: h.MARKER, ...env },
            stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        p.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
        p.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
        const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
        p.on('error', (err) => {
            clearTimeout(timer);
            reject(err);
        });
        p.on('close', (code, signal) => {
            clearTimeout(timer);
            resolve({ code, signal, stdout, stderr });
        });
        p.stdin.on('error', () => {});
        p.stdin.end(input ?? '');
    });
}

function have(program) {
    return spawnSync('sh', ['-c', `command -v ${program}`], { encoding: 'utf8' }).status === 0;
}

/** Every file (and link) under dir, as paths relative to it, sorted. */
function filesUnder(dir) {
    const out = [];
    const walk = (d) => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) {
            const p = path.join(d, e.name);
            if (e.isDirectory()) walk(p);
            else out.push(path.relative(dir, p));
        }
    };
    if (fs.existsSync(dir)) walk(dir);
    return out.sort();
}

async function make(args) {
    const r = await run('make', ['-C', SRC, ...args], { timeoutMs: 600000 });
    assert.equal(r.code, 0, `make ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
    return r;
}

const VERSION = fs
    .readFileSync(path.join(SRC, 'CMakeLists.txt'), 'utf8')
    .match(/^project\(switchyard VERSION ([0-9.]+) /m)[1];

// One install to a real prefix (the unit names binaries that are there), made once.
let installed;
async function install() {
    if (installed) return installed;
    const prefix = path.join(h.tmpdir('yard-pkg-'), 'prefix');
    await make(['install', `PREFIX=${prefix}`]);
    installed = {
        prefix,
        yard: path.join(prefix, 'bin/yard'),
        mock: path.join(prefix, 'libexec/yard/mock-engine'),
        unit: path.join(prefix, 'lib/systemd/system/yard.service'),
        man: path.join(prefix, 'share/man'),
        bash: path.join(prefix, 'share/bash-completion/completions/yard'),
        zshDir: path.join(prefix, 'share/zsh/site-functions'),
        starter: path.join(prefix, 'share/yard/yard.yaml'),
    };
    return installed;
}

const FILES = [
    'bin/yard',
    'lib/systemd/system/yard.service',
    'libexec/yard/mock-engine',
    'libexec/yard/session-gate',
    'share/bash-completion/completions/yard',
    'share/man/man1/yard.1',
    'share/man/man5/yard.yaml.5',
    'share/yard/yard.yaml',
];

test('make install puts each file under PREFIX, and make uninstall takes them away', async () => {
    const inst = await install();
    assert.deepEqual(filesUnder(inst.prefix), [...FILES, 'share/zsh/site-functions/_yard'].sort());
    const mode = (f) => fs.statSync(path.join(inst.prefix, f)).mode & 0o777;
    assert.equal(mode('bin/yard'), 0o755);
    assert.equal(mode('libexec/yard/mock-engine'), 0o755);
    assert.equal(mode('libexec/yard/session-gate'), 0o755);
    assert.equal(mode('share/man/man1/yard.1'), 0o644);

    // A second prefix, so that the one the other tests use stays.
    const other = path.join(h.tmpdir('yard-pkg-'), 'other');
    await make(['install', `PREFIX=${other}`]);
    assert.equal(filesUnder(other).length, FILES.length + 1);
    await make(['uninstall', `PREFIX=${other}`]);
    assert.deepEqual(filesUnder(other), [], 'make uninstall leaves files behind');
});

test('make install DESTDIR stages PREFIX under it; /usr gets the zsh vendor directory', async () => {
    const stage = path.join(h.tmpdir('yard-pkg-'), 'stage');
    await make(['install', `PREFIX=/usr`, `DESTDIR=${stage}`]);
    assert.deepEqual(
        filesUnder(stage),
        [...FILES.map((f) => `usr/${f}`), 'usr/share/zsh/vendor-completions/_yard'].sort()
    );
    // The staged unit names the final paths, not the stage.
    const unit = fs.readFileSync(path.join(stage, 'usr/lib/systemd/system/yard.service'), 'utf8');
    assert.match(
        unit,
        /^ExecStart=\/usr\/bin\/yard serve -c \/etc\/yard\/yard.yaml --state-dir \/var\/lib\/yard$/m
    );
    await make(['uninstall', `PREFIX=/usr`, `DESTDIR=${stage}`]);
    assert.deepEqual(filesUnder(stage), []);
});

test('the installed yard and mock-engine run', async () => {
    const inst = await install();
    const v = await run(inst.yard, ['version'], { env: { YARD_STATE_DIR: h.tmpdir() } });
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout.split('\n')[0], `yard ${VERSION}`);
    const m = await run(inst.mock, ['--help']);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, /^usage: mock-engine /);
});

test('the unit: the service runs the installed yard, and systemd-analyze verify accepts it', async (t) => {
    const inst = await install();
    const unit = fs.readFileSync(inst.unit, 'utf8');
    const key = (k) => (unit.match(new RegExp(`^${k}=(.*)$`, 'm')) || [])[1];
    assert.equal(key('ExecStart'), `${inst.yard} serve -c /etc/yard/yard.yaml --state-dir /var/lib/yard`);
    assert.equal(key('Type'), 'notify');
    assert.equal(key('User'), 'yard');
    assert.equal(key('StateDirectory'), 'yard');
    assert.equal(key('ExecReload'), '/bin/kill -HUP $MAINPID');
    assert.equal(key('KillMode'), 'process');
    assert.equal(key('Delegate'), 'yes');
    assert.equal(key('Restart'), 'on-failure');
    if (!have('systemd-analyze')) {
        t.skip('systemd-analyze is not installed (Debian: systemd)');
        return;
    }
    // MANPATH: the Documentation= man pages are looked up with man(1).
    const r = await run('systemd-analyze', ['verify', inst.unit], {
        env: { MANPATH: `${inst.man}:` },
    });
    assert.equal(r.code, 0, r.stderr);
    // verify only warns about a setting it ignores: any word from it is a fault.
    assert.equal(r.stderr, '');
});

/** The config `yard check` accepts with every commented-out example of the starter
 *  uncommented ('  # name:' and the '  #   key: value' lines under it). */
function uncommentExamples(text) {
    return text
        .split('\n')
        .map((l) => l.replace(/^(\s+)# ([\w-]+:\s*)$/, '$1$2').replace(/^(\s+)#   (\w+: .*)$/, '$1  $2'))
        .join('\n')
        .replace(/^# (groups:)$/m, '$1')
        .replace(/^#   (one-gpu: .*)$/m, '  $1');
}

test('the starter config is valid, and so are its examples; its stand-in model serves', async () => {
    const inst = await install();
    const dir = h.tmpdir();
    const starter = fs.readFileSync(inst.starter, 'utf8');
    const plain = await run(inst.yard, ['check', '-c', inst.starter]);
    assert.equal(plain.code, 0, plain.stderr);

    const all = h.writeConfig(dir, uncommentExamples(starter), 'all.yaml');
    const r = await run(inst.yard, ['check', '-c', all]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ok \(3 models\)/, 'the examples were not all uncommented');
    assert.match(starter, new RegExp(`"${inst.prefix}/libexec/yard/mock-engine --flavor vllm`));

    // The stand-in alone, served by the installed daemon with the installed engine.
    const port = await h.freePort();
    const mockOnly = uncommentExamples(starter)
        .replace(/^listen: .*$/m, `listen: 127.0.0.1:${port}`)
        .replace(/^ {2}(qwen-7b|llama-8b):\n( {4}.*\n)+/gm, '')
        .replace(/^groups:\n.*\n/m, '');
    const config = h.writeConfig(dir, mockOnly);
    const stateDir = path.join(dir, 'state');
    const daemon = h.startProcess(inst.yard, ['serve', '-c', config, '--state-dir', stateDir], {
        name: 'installed yard serve',
    });
    await h.waitFor(() => h.socketAccepts(path.join(stateDir, 'yard.sock')), {
        what: 'the installed daemon to listen',
    });
    const res = await h.httpPost(`http://127.0.0.1:${port}/v1/chat/completions`, {
        model: 'mock',
        max_tokens: 3,
        messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).model, 'mock');
    const stop = await daemon.stop(15000);
    assert.equal(stop.code, 0, daemon.logText());
});

// ---------------------------------------------------------------- man pages

/** The page as text (man -l, ASCII, 80 columns): { code, text, warnings }. */
async function renderMan(file) {
    const r = await run('man', ['--warnings', '-l', file], {
        env: { LC_ALL: 'C', MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat' },
    });
    return { code: r.code, text: r.stdout, warnings: r.stderr };
}

/** The body of section NAME of a rendered page (up to the next section). */
function manSection(text, name) {
    const m = text.match(new RegExp(`^${name}\\n([\\s\\S]*?)(?=^[A-Z][A-Z -]+\\n|$(?![\\s\\S]))`, 'm'));
    return m ? m[1] : '';
}

/** The commands of `yard --help`. */
async function yardCommands(yardBin) {
    const r = await run(yardBin, ['--help']);
    assert.equal(r.code, 0);
    const block = r.stdout.split('\ncommands:\n')[1].split('\n\n')[0];
    return block
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[0])
        .filter(Boolean);
}

/** The options `yard help CMD` names in its own part (before the global options). */
async function usageOptions(yardBin, cmd) {
    const r = await run(yardBin, ['help', cmd]);
    assert.equal(r.code, 0, `yard help ${cmd}: ${r.stderr}`);
    const own = r.stdout.split('\nglobal options:')[0];
    return [...new Set(own.match(/(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])(?![\w-])/g) || [])];
}

test('the man pages render without a warning', async (t) => {
    if (!have('man')) {
        t.skip('man is not installed (Debian: man-db)');
        return;
    }
    const inst = await install();
    for (const page of ['man1/yard.1', 'man5/yard.yaml.5']) {
        const r = await renderMan(path.join(inst.man, page));
        assert.equal(r.code, 0, `${page}: ${r.warnings}`);
        assert.equal(r.warnings, '', `${page} renders with warnings`);
        assert.ok(r.text.length > 2000, `${page} rendered to almost nothing`);
    }
});

test('yard(1) describes every command and every option of the binary', async (t) => {
    if (!have('man')) {
        t.skip('man is not installed (Debian: man-db)');
        return;
    }
    const inst = await install();
    const { text } = await renderMan(path.join(inst.man, 'man1/yard.1'));
    const commands = manSection(text, 'COMMANDS');
    // Each entry starts at the left margin of the section: "       yard CMD ...".
    const entries = {};
    let current = null;
    for (const line of commands.split('\n')) {
        const m = line.match(/^ {7}yard +(\S+)/);
        if (m) current = m[1];
        if (current) entries[current] = (entries[current] || '') + line + '\n';
    }
    for (const cmd of await yardCommands(inst.yard)) {
        assert.ok(entries[cmd], `yard(1) has no entry for 'yard ${cmd}'`);
        for (const opt of await usageOptions(inst.yard, cmd)) {
            assert.ok(
                new RegExp(`(?<![\\w-])${opt}(?![\\w-])`).test(entries[cmd]),
                `yard(1)'s entry for 'yard ${cmd}' does not name ${opt}`
            );
        }
    }
    const globals = manSection(text, 'GLOBAL OPTIONS');
    for (const opt of ['--state-dir', '--config', '-c', '--json', '--help', '--version']) {
        assert.ok(globals.includes(opt), `GLOBAL OPTIONS lacks ${opt}`);
    }
});

/** The keys `yard check` accepts in each mapping, from its "valid keys" lists. */
async function configKeys(yardBin) {
    const z = 'zzzzzzzzzzzzzzzzzzzz'; // no key is near it, so the message lists them all
    const probe = [
        `${z}: 1`,
        `defaults: {${z}: 1}`,
        `router: {${z}: 1}`,
        `gpus: [{index: 0, name: x, memory: 1GiB, ${z}: 1}]`,
        `models: {m: {cmd: x, ${z}: 1, eviction: {${z}: 1}, health: {${z}: 1}}}`,
        `groups: {g: {members: [m], ${z}: 1}}`,
        `pods: {p: {${z}: 1}}`,
        `tools: {${z}: 1}`,
        `events: {${z}: 1}`,
        `clouds: {vast: {${z}: 1}}`,
    ].join('\n');
    const file = h.writeConfig(h.tmpdir(), probe);
    const r = await run(yardBin, ['check', '-c', file]);
    assert.equal(r.code, 2);
    const keys = {};
    for (const line of r.stderr.split('\n')) {
        const m = line.match(/unknown key '\w+' (at top level|in .*?); valid keys: (.*)$/);
        if (m) keys[m[1]] = m[2].split(', ');
    }
    for (const where of ['at top level', "in 'router'", "in model 'm'", "in 'models.m.eviction'",
        "in cloud 'vast'"]) {
        assert.ok(keys[where], `no valid-keys list ${where} from yard check:\n${r.stderr}`);
    }
    return keys;
}

test('yard.yaml(5) describes every key yard check accepts, and its example is valid', async (t) => {
    if (!have('man')) {
        t.skip('man is not installed (Debian: man-db)');
        return;
    }
    const inst = await install();
    const { text } = await renderMan(path.join(inst.man, 'man5/yard.yaml.5'));
    const keys = await configKeys(inst.yard);
    const named = (body, key) => new RegExp(`(?<![\\w.-])${key}(?![\\w-])`).test(body);
    const sections = {
        'at top level': manSection(text, 'TOP-LEVEL KEYS'),
        "in 'router'": manSection(text, 'ROUTER KEYS'),
        "in model 'm'": manSection(text, 'MODEL KEYS'),
        "in cloud 'vast'": manSection(text, 'CLOUD KEYS'),
    };
    for (const [where, list] of Object.entries(keys)) {
        const body = sections[where] ?? text;
        for (const key of list) {
            assert.ok(named(body, key), `yard.yaml(5) does not describe the key '${key}' (${where})`);
        }
    }
    // The EXAMPLE section, as rendered, is a config yard check accepts.
    const example = manSection(text, 'EXAMPLE').replace(/^ {7}/gm, '');
    const file = h.writeConfig(h.tmpdir(), example);
    const r = await run(inst.yard, ['check', '-c', file]);
    assert.equal(r.code, 0, `${r.stderr}\n${example}`);
});

// ---------------------------------------------------------------- completion

/** What the bash completion offers for words (the last one being completed). */
async function bashComplete(inst, words, env = {}) {
    const script = [
        `source ${JSON.stringify(inst.bash)}`,
        'complete -p yard >/dev/null || exit 3',
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))',
        '_yard',
        'printf "%s\\n" "${COMPREPLY[@]}"',
    ].join('\n');
    const r = await run('bash', ['--norc', '--noprofile', '-c', script, 'bash', ...words], {
        env: { PATH: `${path.dirname(inst.yard)}:${process.env.PATH}`, ...env },
        timeoutMs: 30000,
    });
    assert.equal(r.signal, null, `bash completion of '${words.join(' ')}' did not return`);
    assert.equal(r.code, 0, `bash completion of '${words.join(' ')}': ${r.stderr}`);
    assert.equal(r.stderr, '', `bash completion of '${words.join(' ')}' printed errors`);
    return r.stdout.split('\n').filter(Boolean);
}

/** What the zsh completion offers for line (completed at its end). */
async function zshComplete(inst, line, env = {}) {
    const r = await run('zsh', [ZSH_COMPLETE, inst.zshDir, line], {
        env: { PATH: `${path.dirname(inst.yard)}:${process.env.PATH}`, ...env },
        timeoutMs: 30000,
    });
    assert.equal(r.signal, null, `zsh completion of '${line}' did not return`);
    assert.equal(r.code, 0, `zsh completion of '${line}': ${r.stderr}`);
    return r.stdout.split('\n').filter(Boolean);
}

const sorted = (a) => [...a].sort();

test('bash completion: commands, options the binary takes, option values', async () => {
    const inst = await install();
    const none = { YARD_STATE_DIR: h.tmpdir() }; // no daemon there
    const commands = await yardCommands(inst.yard);
    assert.deepEqual(sorted(await bashComplete(inst, ['yard', ''], none)), sorted([...commands, 'help']));
    assert.deepEqual(sorted(await bashComplete(inst, ['yard', 'st'], none)), ['start', 'stop']);
    assert.deepEqual(await bashComplete(inst, ['yard', 'pod', ''], none), ['add', 'ls', 'rm', 'setup']);
    assert.deepEqual(await bashComplete(inst, ['yard', 'sleep', 'm', '--level', ''], none), [
        '1',
        '2',
        'suspend',
        'checkpoint',
    ]);
    assert.deepEqual(await bashComplete(inst, ['yard', 'serve', '--log-format', ''], none), ['text', 'json']);

    const valueOpts = new Set(['--state-dir', '-c', '--config', '--listen', '--log-format', '--pod',
        '--level', '-n', '--lines', '--replica', '--ssh', '--models-path', '--timeout', '--gpus',
        '--vram', '--model', '--dir']);
    const stateDir = h.tmpdir();
    for (const cmd of commands) {
        const words = cmd === 'pod' ? ['yard', 'pod', 'add', '-'] : ['yard', cmd, '-'];
        let offered = await bashComplete(inst, words, none);
        if (cmd === 'pod') {
            for (const sub of ['ls', 'rm', 'setup']) {
                offered = offered.concat(await bashComplete(inst, ['yard', 'pod', sub, '-'], none));
            }
        }
        for (const opt of await usageOptions(inst.yard, cmd)) {
            assert.ok(offered.includes(opt), `bash completion of 'yard ${cmd}' does not offer ${opt}`);
        }
        // Every option offered is one the command takes (not "unknown option").
        for (const opt of new Set(offered)) {
            const args = [cmd, ...(cmd === 'pod' ? ['ls'] : []), opt];
            if (valueOpts.has(opt)) args.push('1');
            // No daemon starts and no file is written: serve and init get a config
            // path that cannot exist.
            if (cmd === 'serve' || cmd === 'init') args.push('-c', '/nonexistent/yard.yaml');
            const r = await run(inst.yard, [...args, '--state-dir', stateDir], { timeoutMs: 30000 });
            assert.doesNotMatch(r.stderr, /unknown option/, `yard ${args.join(' ')}: ${r.stderr}`);
        }
    }
});

/** A daemon with models alpha and beta (never started) and a pod-less host. */
async function daemonWithModels() {
    const dir = h.tmpdir();
    const port = await h.freePort();
    const cmd = `${h.MOCK_ENGINE_BIN} --flavor vllm --port \${PORT} --name \${NAME}`;
    const config = h.writeConfig(
        dir,
        `listen: 127.0.0.1:${port}\nmodels:\n  alpha: { engine: vllm, cmd: "${cmd}" }\n` +
            `  beta: { engine: vllm, cmd: "${cmd}" }\n`
    );
    return h.startDaemon({ config, stateDir: path.join(dir, 'state') });
}

/** A socket that accepts connections and never answers: a daemon that hangs. */
async function hungSocket() {
    const dir = h.tmpdir();
    const conns = [];
    const srv = net.createServer((c) => conns.push(c));
    await new Promise((resolve) => srv.listen(path.join(dir, 'yard.sock'), resolve));
    return {
        dir,
        close: () => {
            for (const c of conns) c.destroy();
            return new Promise((resolve) => srv.close(resolve));
        },
    };
}

test('bash completion: model names from the running daemon, none (and no error) without one', async () => {
    const inst = await install();
    const d = await daemonWithModels();
    const sd = d.stateDir;
    assert.deepEqual(await bashComplete(inst, ['yard', '--state-dir', sd, 'stop', '']), ['alpha', 'beta']);
    assert.deepEqual(await bashComplete(inst, ['yard', 'logs', `--state-dir=${sd}`, 'a']), ['alpha']);
    assert.deepEqual(await bashComplete(inst, ['yard', 'stop', 'alpha', '']), [], 'default state dir');
    assert.deepEqual(await bashComplete(inst, ['yard', 'stop', 'alpha', ''], { YARD_STATE_DIR: sd }), [
        'alpha',
        'beta',
    ]);
    // One model: start takes no second.
    assert.deepEqual(await bashComplete(inst, ['yard', 'start', '--state-dir', sd, 'alpha', '']), []);
    await d.stop();

    assert.deepEqual(await bashComplete(inst, ['yard', '--state-dir', sd, 'stop', '']), []);
    const hung = await hungSocket();
    try {
        assert.deepEqual(await bashComplete(inst, ['yard', '--state-dir', hung.dir, 'stop', '']), []);
    } finally {
        await hung.close();
    }
});

test('zsh completion: commands, options, values, model names; none without a daemon', async (t) => {
    if (!have('zsh')) {
        t.skip('zsh is not installed (Debian: zsh)');
        return;
    }
    const inst = await install();
    const none = { YARD_STATE_DIR: h.tmpdir() };
    const commands = await yardCommands(inst.yard);
    assert.deepEqual(sorted(await zshComplete(inst, 'yard ', none)), sorted([...commands, 'help']));
    assert.deepEqual(sorted(await zshComplete(inst, 'yard st', none)), ['start', 'stop']);
    assert.deepEqual(sorted(await zshComplete(inst, 'yard pod ', none)), ['add', 'ls', 'rm', 'setup']);
    assert.deepEqual(sorted(await zshComplete(inst, 'yard sleep m --level ', none)), [
        '1',
        '2',
        'checkpoint',
        'suspend',
    ]);
    for (const cmd of commands.filter((c) => c !== 'pod')) {
        const offered = await zshComplete(inst, `yard ${cmd} -`, none);
        for (const opt of await usageOptions(inst.yard, cmd)) {
            assert.ok(offered.includes(opt), `zsh completion of 'yard ${cmd}' does not offer ${opt}`);
        }
    }

    const d = await daemonWithModels();
    const sd = d.stateDir;
    assert.deepEqual(sorted(await zshComplete(inst, `yard --state-dir ${sd} stop `)), ['alpha', 'beta']);
    assert.deepEqual(sorted(await zshComplete(inst, `yard stop --state-dir ${sd} alpha `)), ['alpha', 'beta']);
    assert.deepEqual(await zshComplete(inst, `yard logs --state-dir=${sd} a`), ['alpha']);
    await d.stop();
    assert.deepEqual(await zshComplete(inst, `yard --state-dir ${sd} stop `), []);
    const hung = await hungSocket();
    try {
        assert.deepEqual(await zshComplete(inst, `yard --state-dir ${hung.dir} stop `), []);
    } finally {
        await hung.close();
    }
});
