// A daemon for the cuda_suspend and checkpoint tests: one declared 40 GiB GPU
// backed by the mock engine's ledger, llama-server mocks of 30 GiB each (two do
// not fit together), and the stand-ins of tools/standins/ for cuda-checkpoint and
// CRIU (their state in the test's dir). Also the helpers those tests share.
import fs from 'node:fs';
import path from 'node:path';
import {
    MOCK_ENGINE_BIN,
    YARD_SRC_DIR,
    tmpdir,
    writeConfig,
    startDaemon,
    yard,
    ps,
    freePort,
    httpPost,
} from './harness.mjs';

export const CUDA_CHECKPOINT = path.join(YARD_SRC_DIR, 'tools', 'standins', 'cuda-checkpoint');
export const CRIU = path.join(YARD_SRC_DIR, 'tools', 'standins', 'criu');
const FIXTURES = path.join(YARD_SRC_DIR, 'tests', 'e2e', 'fixtures');

/**
 * An executable wrapper at file that appends "SSH_CONNECTION|ARGS" to log, then
 * runs tool. Options, each a file whose existence turns the behaviour on:
 *   failFile:    fail as criu on a full disk ("No space left on device", exit 1)
 *   newRootFile: a restore names the pid in that file as its root, as a real
 *                restore's new process (another pid or start time) would be
 *   dropFile:    the connection drops after the tool ran: its sshd (the nearest
 *                ancestor named sshd*) dies
 */
export function recordingTool(file, log, tool, { failFile, dropFile, newRootFile } = {}) {
    let fail = failFile
        ? `if [ -e '${failFile}' ]; then echo "Error (criu/image.c): Can't write images: No space left on device" >&2; exit 1; fi\n`
        : '';
    if (newRootFile)
        fail +=
            `if [ -e '${newRootFile}' ] && [ "$1" = restore ]; then '${tool}' "$@" || exit; ` +
            `for a in "$@"; do [ "$prev" = --pidfile ] && cat '${newRootFile}' > "$a"; prev=$a; done; exit 0; fi\n`;
    if (dropFile)
        fail +=
            `if [ -e '${dropFile}' ]; then '${tool}' "$@"; p=$$; while [ "$p" -gt 1 ]; do ` +
            `case $(cat /proc/$p/comm) in sshd*) kill -9 $p; exit 1;; esac; ` +
            `p=$(awk '/^PPid:/ {print $2}' /proc/$p/status); done; exit 1; fi\n`;
    fs.writeFileSync(
        file,
        `#!/bin/sh\nprintf '%s|%s\\n' "\${SSH_CONNECTION:-}" "$*" >> '${log}'\n${fail}exec '${tool}' "$@"\n`,
        { mode: 0o755 },
    );
}

/** The lines a recordingTool wrote to log ([] when it never ran). */
export const toolCalls = (log) => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : []);

/**
 * The session environment of a pod with one H100 whose tools are the ones in
 * podBin: its PATH finds podBin first, then the fixtures' nvidia-smi, which
 * lists the engine's GPU process from ledger; HOME is home, and the stand-ins
 * keep their state there. For startSshd's keyEnv.
 */
export function gpuPodEnv(home, podBin, ledger) {
    return {
        PATH: `${podBin}:${FIXTURES}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
        HOME: home,
        YARD_FAKE_GPUS: '0,NVIDIA H100 80GB HBM3,81559',
        YARD_FAKE_LEDGER: ledger,
        YARD_STANDIN_STATE: path.join(home, 'standin'),
    };
}

/**
 * Starts yard with models NAMES, each with `eviction: { process: evict }`.
 *   cudaTool, criu:  the tools' paths (default: the stand-ins)
 *   keep:            tools.keep_checkpoints
 *   groups:          YAML text appended to the config
 *   tools:           YAML text added to the tools mapping (", checkpoint_store: {...}")
 *   dir, args, env:  the state dir (default: a new one), extra `yard serve` arguments
 *                    and environment
 * Returns { dir, d, ask(model), config }; ask posts a 2-token completion.
 */
export async function standinDaemon(
    names,
    {
        evict = 'cuda_suspend',
        cudaTool = CUDA_CHECKPOINT,
        criu = CRIU,
        keep = false,
        groups = '',
        tools = '',
        dir = tmpdir(),
        args = [],
        env = {},
    } = {}
) {
    const port = await freePort();
    const ledger = path.join(dir, 'gpu.ledger');
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\ngpu_ledger: ${ledger}\n`;
    yaml += `tools: { cuda_checkpoint: ${JSON.stringify(cudaTool)}, criu: ${JSON.stringify(criu)}`;
    yaml += `, keep_checkpoints: ${keep}${tools} }\n`;
    yaml += `defaults: { stop_timeout: 2s }\ngpus: [ { index: 0, name: "GPU", memory: 40GiB } ]\n`;
    yaml += 'models:\n';
    for (const name of names) {
        const cmd =
            `${MOCK_ENGINE_BIN} --flavor llamacpp --port \${PORT} --name \${NAME} ` +
            `--vram 30GiB --ledger ${ledger} --load-time 200ms`;
        yaml += `  ${name}:\n    engine: llamacpp\n    vram: 30GiB\n`;
        yaml += `    eviction: { process: ${evict} }\n    cmd: ${JSON.stringify(cmd)}\n`;
    }
    yaml += groups;
    const config = writeConfig(dir, yaml);
    const d = await startDaemon({
        config,
        stateDir: dir,
        args,
        env: { YARD_STANDIN_STATE: path.join(dir, 'standin'), ...env },
    });
    const ask = (model) =>
        httpPost(
            `http://127.0.0.1:${port}/v1/completions`,
            JSON.stringify({ model, prompt: 'hi', max_tokens: 2 }),
            { headers: { 'Content-Type': 'application/json' } }
        );
    return { dir, d, ask, config };
}

/** The `yard ps` entry of a model. */
export const entry = async (dir, name) => (await ps(dir)).find((e) => e.name === name);

/** Bytes of GPU memory `yard gpus` attributes to a model. */
export async function usedBy(dir, model) {
    const inv = JSON.parse((await yard(['gpus', '--json'], { stateDir: dir })).stdout);
    let sum = 0;
    for (const g of inv.gpus) for (const p of g.processes) if (p.model === model) sum += p.used;
    return sum;
}
