// The CLI habits a person brings from git, kubectl and Ollama (no daemon needed):
//   - yard -v, -V and --version print the version
//   - a command another tool would use (status, ls, run, kill) points at yard's
//     own, and a typo of a command or an option gets "did you mean"
//   - mock-engine --help prints its usage; an unknown option points at it
import { test } from 'node:test';
import { spawn } from 'node:child_process';
import * as h from './lib/harness.mjs';

const { assert } = h;

/** Runs a program to its end: { code, stdout, stderr }. */
function run(bin, args) {
    return new Promise((resolve, reject) => {
        const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (d) => (stdout += d));
        p.stderr.on('data', (d) => (stderr += d));
        p.on('error', reject);
        p.on('close', (code) => resolve({ code, stdout, stderr }));
    });
}

test('yard -v prints the version, as --version and -V do', async () => {
    for (const flag of ['-v', '-V', '--version']) {
        const r = await h.yard([flag]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^yard \d+\.\d+\.\d+/, flag);
    }
});

test("another tool's command points at yard's", async () => {
    for (const [word, want] of [
        ['status', 'ps'],
        ['ls', 'ps'],
        ['run', 'start'],
        ['kill', 'stop'],
        ['strat', 'start'],
        ['evnets', 'events'],
    ]) {
        const r = await h.yard([word]);
        assert.equal(r.code, 2, word);
        assert.equal(
            r.stderr,
            `yard: '${word}' is not a yard command; see 'yard help'\nyard: did you mean 'yard ${want}'?\n`,
        );
    }
    const far = await h.yard(['xyzzy']);
    assert.equal(far.code, 2);
    assert.equal(far.stderr, "yard: 'xyzzy' is not a yard command; see 'yard help'\n");
});

test('an option typo names the option meant', async () => {
    const r = await h.yard(['ps', '--jsn']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, "yard ps: unknown option '--jsn' (did you mean '--json'?); see 'yard ps --help'\n");
    const s = await h.yard(['logs', 'm', '--folow']);
    assert.equal(s.code, 2);
    assert.match(s.stderr, /unknown option '--folow' \(did you mean '--follow'\?\)/);
});

test('mock-engine --help prints its usage', async () => {
    const r = await run(h.MOCK_ENGINE_BIN, ['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^usage: mock-engine --flavor vllm\|sglang\|llamacpp --port PORT --name NAME/);
    assert.match(r.stdout, /--fail MODES/);
    const bad = await run(h.MOCK_ENGINE_BIN, ['--bogus']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, "mock-engine: unknown option '--bogus'; see 'mock-engine --help'\n");
});

test('yard check warns of what loads but cannot work, and still exits 0', async () => {
    const dir = h.tmpdir('yard-check-warn-');
    const file = h.writeConfig(
        dir,
        'gpus: [{index: 0, memory: 24GiB}]\n' +
            'models:\n  a:\n    engine: llamacpp\n    cmd: x --port ${PORT}\n    vram: 80GiB\n' +
            'groups:\n  g: { exclusive: true, members: [] }\n',
    );
    const r = await h.yard(['check', '-c', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${file}: ok (1 model, warnings above)\n`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 2, r.stderr);
    assert.match(lines[0], /:6:11: warning: models\.a\.vram: 80\.0GiB is more than any declared GPU holds/);
    assert.match(lines[1], /:8:34: warning: groups\.g\.members: the group has no members/);
    const empty = h.writeConfig(h.tmpdir('yard-check-empty-'), '');
    const e = await h.yard(['check', '-c', empty]);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stderr, /warning: the file is empty/);
});

test('yard serve without a config file says how to make one; a port in use claims no --keep-engines', async () => {
    const dir = h.tmpdir('yard-serve-none-');
    const missing = `${dir}/none.yaml`;
    const r = await h.yard(['serve', '-c', missing], { stateDir: dir });
    assert.equal(r.code, 2);
    assert.equal(
        r.stderr,
        `yard serve: there is no config file ${missing}; write a starter one with 'yard init' ` +
            "(it looks at this machine's GPUs and engines), or name yours with -c FILE\n",
    );
    // the listen port is someone else's: the start fails, and says nothing of --keep-engines
    const net = await import('node:net');
    const holder = net.createServer();
    await new Promise((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
        const file = h.writeConfig(dir, `listen: 127.0.0.1:${holder.address().port}\nmodels: {}\n`);
        const s = await h.yard(['serve', '-c', file], { stateDir: dir });
        assert.notEqual(s.code, 0);
        assert.match(s.stderr, /cannot listen on 127\.0\.0\.1:\d+: Address already in use/);
        assert.doesNotMatch(s.stderr, /keep-engines/);
    } finally {
        holder.close();
    }
});
