// A daemon for the cuda_suspend and checkpoint tests: one declared 40 GiB GPU
// backed by the mock engine's ledger, llama-server mocks of 30 GiB each (two do
// not fit together), and the stand-ins of tools/standins/ for cuda-checkpoint and
// CRIU (their state in the test's dir). Also the helpers those tests share.
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

/**
 * Starts yard with models NAMES, each with `eviction: { process: evict }`.
 *   cudaTool, criu:  the tools' paths (default: the stand-ins)
 *   keep:            tools.keep_checkpoints
 *   groups:          YAML text appended to the config
 *   dir, args:       the state dir (default: a new one) and extra `yard serve` arguments
 * Returns { dir, d, ask(model), config }; ask posts a 2-token completion.
 */
export async function standinDaemon(
    names,
    { evict = 'cuda_suspend', cudaTool = CUDA_CHECKPOINT, criu = CRIU, keep = false, groups = '', dir = tmpdir(), args = [] } = {}
) {
    const port = await freePort();
    const ledger = path.join(dir, 'gpu.ledger');
    const startPort = 20000 + Math.floor(Math.random() * 20000);
    let yaml = `listen: 127.0.0.1:${port}\nstart_port: ${startPort}\ngpu_ledger: ${ledger}\n`;
    yaml += `tools: { cuda_checkpoint: ${JSON.stringify(cudaTool)}, criu: ${JSON.stringify(criu)}`;
    yaml += `, keep_checkpoints: ${keep} }\n`;
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
        env: { YARD_STANDIN_STATE: path.join(dir, 'standin') },
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
