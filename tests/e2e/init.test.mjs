// `yard init`: a starter yard.yaml from what this machine has (docs/cli.md, "yard init").
//
// A fake machine: a tree of GGUF files with awkward names (spaces, dots, a quote and
// "${PORT}" in one, non-ASCII, one not UTF-8, names that sanitise to the same name,
// a split model, a projector, a file that is not GGUF, a sparse 3 GiB file and one
// larger than any GPU, links), stand-in engines on a PATH the test builds (nothing
// else is on it), and the fixtures' nvidia-smi stand-in with two GPUs
// (YARD_FAKE_GPUS). Asserted:
//   - what it says it found, and the file: one llama-server model per GGUF model,
//     named after its file, with its path intact in the cmd, gpus and vram (or the
//     CPU when it fits no GPU), commented vLLM and SGLang examples
//   - `yard check` accepts the file without a warning, and accepts it with the
//     examples uncommented (delete the '#')
//   - an existing file is kept without --force, replaced with it; -c - prints it
//   - `yard serve` runs a found model: the stand-in llama-server (the mock engine
//     with its flavor) gets the file's path as written on disk, and answers
//   - with nothing found (no GPU, no engine, no directory) the file still passes
//   - bad directories are usage errors
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.mjs';
import { tcpAccepts } from './lib/router-helpers.mjs';

const { assert } = h;
const GiB = 1024 ** 3;
const NVSMI = path.join(h.YARD_SRC_DIR, 'tests/e2e/fixtures/nvidia-smi');
const GPUS = '0,NVIDIA H100 80GB HBM3,81559;1,NVIDIA H100 80GB HBM3,81559';

/** A file that begins with GGUF's magic; size (bytes) makes it sparse. */
function gguf(file, size = 0) {
    fs.mkdirSync(path.dirname(file.toString()), { recursive: true });
    fs.writeFileSync(file, 'GGUF\x03\x00\x00\x00');
    if (size) fs.truncateSync(file, size);
}

/** A directory of executables: the stand-in engines, nvidia-smi and bash (for it). */
function standinBin(dir, { engines = true, smi = true } = {}) {
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin, { recursive: true });
    fs.symlinkSync(fs.realpathSync('/bin/bash'), path.join(bin, 'bash'));
    if (smi) fs.symlinkSync(NVSMI, path.join(bin, 'nvidia-smi'));
    if (!engines) return bin;
    // llama-server: the mock engine with its flavor, serving the name given with -a.
    fs.writeFileSync(
        path.join(bin, 'llama-server'),
        '#!/bin/sh\n' +
            'name=\nprev=\n' +
            'for a in "$@"; do [ "$prev" = "-a" ] && name="$a"; prev="$a"; done\n' +
            `exec '${h.MOCK_ENGINE_BIN}' --flavor llamacpp --name "$name" --load-time 100ms "$@"\n`,
        { mode: 0o755 },
    );
    for (const e of ['vllm', 'sglang']) {
        fs.writeFileSync(path.join(bin, e), `#!/bin/sh\necho "${e} stand-in: not run in this test" >&2\nexit 1\n`, {
            mode: 0o755,
        });
    }
    return bin;
}

/**
 * The models of a file yard init wrote: { name: { comment, engine, cmd, gpus, vram,
 * notes } }, read by the shape it writes (a test of that shape too).
 */
function models(text) {
    const lines = text.split('\n');
    const at = lines.indexOf('models:');
    assert.ok(at >= 0, 'a models: section');
    const out = {};
    let comment = [];
    let cur = null;
    for (const line of lines.slice(at + 1)) {
        let m;
        if ((m = line.match(/^ {2}("(?:[^"\\]|\\.)*"|[^ #"][^:]*):$/))) {
            const name = m[1].startsWith('"') ? JSON.parse(m[1]) : m[1];
            cur = out[name] = { comment: comment.join('\n'), notes: [] };
            comment = [];
        } else if (cur && (m = line.match(/^ {4}(engine|cmd|gpus|vram): (.*)$/))) {
            cur[m[1]] = m[1] === 'cmd' ? JSON.parse(m[2]) : m[2];
        } else if (cur && (m = line.match(/^ {4}# (.*)$/))) {
            cur.notes.push(m[1]);
        } else if ((m = line.match(/^ {2}# (.*)$/))) {
            cur = null;
            comment.push(m[1]);
        } else if (line === '') {
            cur = null;
            comment = [];
        } else {
            cur = null;
        }
    }
    return out;
}

/** The text with each commented-out line ('#' then YAML) uncommented. */
const uncomment = (text) => text.replace(/^ {2}#(?=\S| {2})/gm, '  ');

async function initIn(dir, args, env) {
    return h.yard(['init', ...args], { env: { ...env, HOME: dir } });
}

test('yard init on a tree of GGUF files, stand-in engines and two GPUs', async (t) => {
    const dir = h.tmpdir('yard-init-');
    const bin = standinBin(dir);
    const root = path.join(dir, 'models');
    const other = path.join(dir, 'more models');
    gguf(path.join(root, 'a b', 'Llama 3.1 8B.Q4_K_M.gguf'));
    gguf(path.join(root, 'my model.gguf'));
    gguf(path.join(root, 'sub', 'my-model.gguf')); // the same name once sanitised
    gguf(path.join(root, 'My Model.GGUF')); // another name: names keep their case
    gguf(path.join(root, 'über modell.gguf'));
    gguf(path.join(root, '日本語.gguf'));
    gguf(path.join(root, "it's ${PORT}.gguf"));
    gguf(path.join(root, 'big-00001-of-00002.gguf'), 2 * GiB);
    gguf(path.join(root, 'big-00002-of-00002.gguf'), GiB);
    gguf(path.join(root, 'broken-00001-of-00003.gguf'));
    gguf(path.join(root, 'broken-00003-of-00003.gguf'));
    gguf(path.join(root, 'mmproj-model-f16.gguf'));
    gguf(path.join(root, '.hidden', 'secret.gguf'));
    gguf(Buffer.concat([Buffer.from(path.join(root, 'bad')), Buffer.from([0xff]), Buffer.from('.gguf')]));
    gguf(path.join(other, 'huge.gguf'), 3 * GiB);
    gguf(path.join(other, 'toolarge.gguf'), 100 * GiB);
    fs.writeFileSync(path.join(root, 'notes.gguf'), 'these are notes\n');
    fs.writeFileSync(path.join(root, 'README.txt'), 'not a model\n');
    fs.symlinkSync(path.join(root, 'my model.gguf'), path.join(other, 'linked.gguf'));
    fs.symlinkSync(root, path.join(other, 'loop'));
    const env = { PATH: bin, YARD_FAKE_GPUS: GPUS };
    const config = path.join(dir, 'yard.yaml');

    const r = await initIn(dir, ['--dir', root, other, '-c', config], env);
    assert.equal(r.code, 0, r.stderr);
    const nvml = /through nvml/.test(r.stdout);
    const text = fs.readFileSync(config, 'utf8');
    const found = models(text);

    await t.test('it says what it found and where it wrote', () => {
        if (!nvml) {
            assert.match(
                r.stdout,
                /^found 2 GPUs through nvidia-smi: 0: NVIDIA H100 80GB HBM3 \(79\.6GiB\), 1: NVIDIA H100 80GB HBM3 \(79\.6GiB\)$/m,
            );
        }
        assert.match(
            r.stdout,
            new RegExp(`^found llama-server at ${bin}/llama-server, vllm at ${bin}/vllm, sglang at ${bin}/sglang$`, 'm'),
        );
        assert.match(r.stdout, new RegExp(`^found 17 GGUF files under '${root}', '${other}': 10 models; skipped 5:$`, 'm'));
        for (const [file, why] of [
            ['broken-00001-of-00003.gguf', 'part 2 of its 3 is missing, so llama-server cannot load it'],
            ['mmproj-model-f16.gguf', 'a multimodal projector, not a model'],
            ['bad?.gguf', 'its path is not UTF-8'],
            ['notes.gguf', "not a GGUF file (it does not begin with 'GGUF')"],
        ]) {
            assert.ok(r.stdout.includes(`  '${root}/${file}': ${why}`), `${file}: ${why}\n${r.stdout}`);
        }
        assert.ok(r.stdout.includes(`  '${other}/linked.gguf': the same file as '${root}/my model.gguf' (model 'my-model')`), r.stdout);
        assert.match(r.stdout, new RegExp(`^wrote ${config} with 10 models; check it with 'yard check -c ${config}'`, 'm'));
        assert.equal(r.stderr, '');
    });

    await t.test('one llama-server model per GGUF model, named after its file, its path intact', () => {
        const want = {
            'Llama-3.1-8B.Q4_K_M': `${root}/a b/Llama 3.1 8B.Q4_K_M.gguf`,
            'My-Model': `${root}/My Model.GGUF`,
            big: `${root}/big-00001-of-00002.gguf`,
            'it-s-PORT': `${root}/it's \${PORT}.gguf`,
            'my-model': `${root}/my model.gguf`,
            'my-model-2': `${root}/sub/my-model.gguf`,
            'ber-modell': `${root}/über modell.gguf`,
            model: `${root}/日本語.gguf`,
            huge: `${other}/huge.gguf`,
            toolarge: `${other}/toolarge.gguf`,
        };
        const names = Object.keys(found).filter((n) => found[n].engine === 'llamacpp');
        for (const [name, file] of Object.entries(want)) {
            const m = found[name];
            assert.ok(m, `model '${name}' in\n${text}`);
            assert.equal(m.engine, 'llamacpp');
            assert.ok(m.comment.startsWith(JSON.stringify(file)), `${name}: ${m.comment}`);
            const quoted = /^[A-Za-z0-9/._+\-:@%,=]+$/.test(file) ? file : `'${file.replace(/'/g, "'\\''")}'`;
            const cmd = `${bin}/llama-server -m ${quoted} --port \${PORT} -a \${NAME}`;
            // -ngl 99 where the model fits a GPU (NVML's GPUs are this host's own).
            if (nvml) assert.ok(m.cmd === cmd || m.cmd === `${cmd} -ngl 99`, m.cmd);
            else assert.equal(m.cmd, name === 'toolarge' ? cmd : `${cmd} -ngl 99`, name);
        }
        assert.deepEqual(names.sort(), Object.keys(want).sort());
        assert.ok(found.big.comment.endsWith('and 1 more part, 3.0GiB'), found.big.comment);
        if (nvml) return;
        // vram: the file, a quarter more and 1 GiB, in whole GiB; on a GPU when it fits one.
        assert.equal(found.huge.gpus, '1');
        assert.equal(found.huge.vram, '5GiB');
        assert.equal(found.big.vram, '5GiB');
        assert.equal(found['my-model'].vram, '2GiB');
        assert.equal(found.toolarge.gpus, undefined);
        assert.equal(found.toolarge.vram, undefined);
        assert.match(found.toolarge.notes.join(' '), /about 126GiB: more than any GPU here \(79\.6GiB\), so it runs on the CPU/);
    });

    await t.test('the GPUs and engines are in the header; vLLM and SGLang are commented examples', () => {
        if (!nvml) {
            assert.match(text, /^# GPUs \(read through nvidia-smi\):\n# {3}0: NVIDIA H100 80GB HBM3, 79\.6GiB\n# {3}1: /m);
            assert.match(text, /^gpus: auto$/m);
        }
        assert.match(text, /^listen: 127\.0\.0\.1:8080$/m);
        assert.ok(!found['qwen2.5-7b-vllm'] && !found['qwen2.5-7b-sglang'], 'examples are commented out');
        assert.ok(text.includes(`  #  cmd: "${bin}/vllm serve Qwen/Qwen2.5-7B-Instruct --port \${PORT}`), text);
        assert.ok(text.includes(`  #  cmd: "${bin}/sglang serve --model-path Qwen/Qwen2.5-7B-Instruct --port \${PORT}`), text);
        assert.ok(!text.includes('secret'), 'hidden directories are not searched');
    });

    await t.test('yard check accepts it, and its examples uncommented', async () => {
        const c = await h.yard(['check', '-c', config]);
        assert.equal(c.code, 0, c.stderr);
        assert.equal(c.stdout, `${config}: ok (10 models)\n`);
        assert.equal(c.stderr, '');
        const unc = path.join(dir, 'uncommented.yaml');
        fs.writeFileSync(unc, uncomment(text));
        const u = await h.yard(['check', '-c', unc]);
        assert.equal(u.code, 0, u.stderr);
        assert.equal(u.stdout, `${unc}: ok (12 models)\n`);
    });

    await t.test('an existing file is kept without --force, replaced with it; -c - prints it', async () => {
        fs.writeFileSync(config, text + '# my edit\n');
        const again = await initIn(dir, ['--dir', root, '-c', config], env);
        assert.equal(again.code, 1);
        assert.equal(again.stderr, `yard: '${config}' exists; pass --force to overwrite it, or -c FILE to write another\n`);
        assert.ok(fs.readFileSync(config, 'utf8').endsWith('# my edit\n'));
        const forced = await initIn(dir, ['--dir', root, other, '-c', config, '--force'], env);
        assert.equal(forced.code, 0, forced.stderr);
        const now = fs.readFileSync(config, 'utf8');
        assert.ok(!now.includes('# my edit'));
        assert.deepEqual(Object.keys(models(now)), Object.keys(found));
        const printed = await initIn(dir, ['--dir', root, other, '-c', '-'], env);
        assert.equal(printed.code, 0, printed.stderr);
        assert.deepEqual(Object.keys(models(printed.stdout)), Object.keys(found));
        assert.match(printed.stderr, /^found 17 GGUF files under/m);
    });

    await t.test('yard serve runs a found model with the stand-in llama-server', async () => {
        const port = await h.freePort();
        const stateDir = h.tmpdir('yard-init-state-');
        const d = await h.startDaemon({
            config,
            stateDir,
            listen: `127.0.0.1:${port}`,
            env: { PATH: `${bin}:${process.env.PATH}`, YARD_FAKE_GPUS: GPUS },
        });
        try {
            await h.waitFor(() => tcpAccepts(port), { what: `yard listening on ${port}` });
            const name = 'it-s-PORT';
            const s = await h.yard(['start', name, '--wait'], { stateDir });
            assert.equal(s.code, 0, `${s.stderr}\n${d.logText()}`);
            // The engine got the file as it is on disk: llama-server's /props says which.
            const props = await h.httpGet(`http://127.0.0.1:${port}/upstream/${name}/props`);
            assert.equal(props.status, 200, props.body);
            assert.equal(JSON.parse(props.body).model_path, `${root}/it's \${PORT}.gguf`);
            const chat = await h.httpPost(`http://127.0.0.1:${port}/v1/chat/completions`, {
                model: name,
                max_tokens: 3,
                messages: [{ role: 'user', content: 'hi' }],
            });
            assert.equal(chat.status, 200, chat.body);
            assert.equal(JSON.parse(chat.body).model, name);
        } finally {
            await d.stop();
        }
    });
});

test('yard init with nothing found writes a file that passes yard check', async () => {
    const dir = h.tmpdir('yard-init-');
    const bin = standinBin(dir, { engines: false, smi: false });
    const config = path.join(dir, 'yard.yaml');
    const r = await initIn(dir, ['-c', config], { PATH: bin });
    assert.equal(r.code, 0, r.stderr);
    const nvml = /through nvml/.test(r.stdout);
    if (!nvml) assert.match(r.stdout, /^found no GPU \(no NVML library, no nvidia-smi on PATH\)$/m);
    assert.match(r.stdout, /^found no engine on PATH \(llama-server, vllm, sglang\)$/m);
    assert.match(r.stdout, /^no GGUF files looked for: name the directories that hold them with --dir DIR$/m);
    assert.match(r.stdout, new RegExp(`^wrote ${config} with 0 models;`, 'm'));
    const text = fs.readFileSync(config, 'utf8');
    assert.deepEqual(Object.keys(models(text)), []);
    // No models is what yard check warns about; the example is one once uncommented.
    const c = await h.yard(['check', '-c', config]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stderr, /warning: .*no models/);
    fs.writeFileSync(config, uncomment(text));
    const u = await h.yard(['check', '-c', config]);
    assert.equal(u.code, 0, u.stderr);
    assert.equal(u.stdout, `${config}: ok (1 model)\n`);
    assert.match(uncomment(text), /^ {4}cmd: "llama-server -m \/path\/to\/model\.gguf --port \$\{PORT\} -a \$\{NAME\}"$/m);
});

test('yard init: a directory that is not there, or not a directory, is a usage error', async () => {
    const dir = h.tmpdir('yard-init-');
    const file = path.join(dir, 'f.gguf');
    gguf(file);
    for (const [arg, why] of [
        [path.join(dir, 'nope'), 'No such file or directory'],
        [file, 'not a directory'],
    ]) {
        const r = await h.yard(['init', '--dir', arg, '-c', path.join(dir, 'y.yaml')]);
        assert.equal(r.code, 2);
        assert.equal(r.stderr, `yard init: cannot search '${arg}': ${why}\n`);
        assert.ok(!fs.existsSync(path.join(dir, 'y.yaml')));
    }
    const help = await h.yard(['init', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^usage: yard init \[--dir PATH\]\.\.\. \[-c FILE\] \[--force\]$/m);
});
