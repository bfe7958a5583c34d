/*
 * Allocation failures in the config loader: for every N, config_load with
 * the Nth allocation failing must not abort, must return NULL with exactly
 * one message, "FILE: out of memory while loading the config", and must not
 * leak. N goes up until a load completes without reaching its Nth
 * allocation; that load must give the normal result. Each N runs in this
 * process: the loader has no aborting allocation left on these paths.
 * (libyaml allocates with its own malloc, outside the hook.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc_fail.h"
#include "config/config.h"

/* Every section and every kind of value, so each reader allocates. */
static const char valid_yaml[] =
    "listen: 127.0.0.1:9090\n"
    "api_keys: [sk-one, sk-two]\n"
    "gpus:\n"
    "  - {index: 0, name: NVIDIA H100, memory: 80GiB}\n"
    "  - {index: 1, memory: 24GB}\n"
    "defaults: {ttl: 10m, startup_timeout: 5m, stop_timeout: 15s}\n"
    "router: {max_queue: 64, max_wait: 90s, policy: cost_aware, max_body: 1MiB}\n"
    "start_port: 6100\n"
    "log_max_size: 512MiB\n"
    "gpu_ledger: /tmp/ledger.json\n"
    "tools: {criu: /usr/sbin/criu, nvidia_smi: /usr/bin/nvidia-smi, keep_checkpoints: true,\n"
    "        checkpoint_store: {url: \"https://s3.example.org/\", bucket: yard, prefix: ckpt/,\n"
    "                           keep: 3, part_size: 32MiB}}\n"
    "models:\n"
    "  qwen-7b:\n"
    "    engine: vllm\n"
    "    cmd: \"vllm serve ${MODEL} --port ${PORT} --served-model-name ${NAME}\"\n"
    "    model: Qwen/Qwen2.5-7B-Instruct\n"
    "    aliases: [qwen, q7]\n"
    "    env: {HF_HOME: /models, CUDA_LAUNCH_BLOCKING: '1'}\n"
    "    cwd: /srv\n"
    "    port: 7001\n"
    "    gpus: [0, 1]\n"
    "    vram: 20GiB\n"
    "    ttl: 30m\n"
    "    restart: on-failure\n"
    "    concurrency: 4\n"
    "    eviction: {weights: offload, process: keep_running}\n"
    "  llama:\n"
    "    cmd: llama-server -m /m.gguf --port ${PORT}\n"
    "    engine: llamacpp\n"
    "    aliases: [l]\n"
    "    gpus: 1\n"
    "    health: {path: /healthz, status: 200}\n"
    "    pod: box\n"
    "groups:\n"
    "  big: {exclusive: true, members: [qwen, llama]}\n";

/* Errors of many kinds, so the messages' allocations are reached too. */
static const char invalid_yaml[] =
    "listen: nowhere\n"
    "comand: x\n"
    "gpus: [{index: 0}]\n"
    "router: {policy: lifo, max_queue: [1]}\n"
    "models:\n"
    "  a:\n"
    "    cmd: \"serve 'unterminated\"\n"
    "    port: 9090\n"
    "    aliases: [b, {x: 1}]\n"
    "    env: {1BAD: x, GOOD: [1]}\n"
    "    eviction: {weights: retain, process: keep_running}\n"
    "  b:\n"
    "    cmd: serve ${NOPE}\n"
    "    gpus: [0, 0]\n"
    "  \"n\\0ul\": {cmd: x, aliases: [\"\\x01\", ok]}\n"
    "  c:\n"
    "    cmd: x\n"
    "    pod: ../p\n"
    "    env: {A: 1, B: 2, C: 3, D: 4, E: 5, F: 6, G: 7, H: 8, A: 9}\n"
    "groups:\n"
    "  g: {members: [a, zzz, a], exclusive: maybe}\n";

struct fixture {
    char path[64];
};

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int rc = fputs(text, f) < 0 ? -1 : 0;
    return fclose(f) != 0 ? -1 : rc;
}

/*
 * Loads path with the Nth allocation failing, for N = 1, 2, ... until a
 * load completes without reaching its Nth allocation. Returns how many
 * allocations a complete load makes; *ok_errors gets its number of messages.
 */
static unsigned long load_every_failure(const char *path, size_t *ok_errors)
{
    char *oom = NULL;
    assert_true(asprintf(&oom, "%s: out of memory while loading the config", path) > 0);
    alloc_fail_leaked(); /* start from a clean slate */
    for (unsigned long n = 1;; n++) {
        struct config_errors e = {0};
        alloc_fail_arm(n);
        struct config *c = config_load(path, &e);
        alloc_fail_disarm();
        if (!alloc_fail_fired()) {
            *ok_errors = e.n;
            if (e.n == 0)
                assert_non_null(c);
            else
                assert_null(c);
            config_free(c);
            config_errors_release(&e);
            assert_false(alloc_fail_leaked());
            free(oom);
            return n - 1;
        }
        if (c || e.n != 1 || strcmp(e.msgs[0], oom) != 0) {
            for (size_t i = 0; i < e.n; i++)
                print_message("got: %s\n", e.msgs[i]);
            fail_msg("allocation %lu failed: want NULL and '%s'", n, oom);
        }
        config_errors_release(&e);
        if (alloc_fail_leaked())
            fail_msg("allocation %lu failed: memory leaked", n);
    }
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->path, sizeof f->path, "/tmp/yard-alloc-config-%d.yaml", (int)getpid());
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->path);
    free(f);
    return 0;
}

static void test_valid_config(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(write_file(f->path, valid_yaml), 0);
    size_t errors = 1;
    unsigned long total = load_every_failure(f->path, &errors);
    assert_int_equal(errors, 0);
    print_message("a valid load makes %lu allocations; each failure was reported\n", total);
    assert_true(total > 50);
}

static void test_invalid_config(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(write_file(f->path, invalid_yaml), 0);
    size_t errors = 0;
    unsigned long total = load_every_failure(f->path, &errors);
    assert_true(errors >= 10);
    print_message("an invalid load makes %lu allocations (%zu messages); each failure was "
                  "reported\n",
                  total, errors);
}

/* Enough models, aliases and ports that the tables of names and ports grow. */
static void test_many_names(void **state)
{
    struct fixture *f = *state;
    char yaml[8192] = "api_keys: []\ngroups:\n  all: {members: [m0, a1, m39]}\nmodels:\n";
    size_t len = strlen(yaml);
    for (int i = 0; i < 40; i++)
        len += (size_t)snprintf(yaml + len, sizeof yaml - len,
                                "  m%d: {cmd: run, port: %d, aliases: [a%d, b%d]}\n", i, 7000 + i,
                                i, i);
    assert_true(len < sizeof yaml);
    assert_int_equal(write_file(f->path, yaml), 0);
    size_t errors = 0;
    load_every_failure(f->path, &errors);
    assert_int_equal(errors, 1); /* the empty api_keys */
}

/* Clouds, valid (every key, filters of each form) and invalid, with a key pair beside the file. */
static void test_clouds(void **state)
{
    struct fixture *f = *state;
    char key[96], pub[100], yaml[2048];
    snprintf(key, sizeof key, "/tmp/yard-alloc-config-%d.key", (int)getpid());
    snprintf(pub, sizeof pub, "%s.pub", key);
    assert_int_equal(write_file(key, "k\n"), 0);
    assert_int_equal(write_file(pub, "ssh-ed25519 AAAA\n"), 0);
    snprintf(yaml, sizeof yaml,
             "clouds:\n"
             "  vast:\n"
             "    provider: vast\n"
             "    api_key: ${env.VAST_API_KEY}\n"
             "    url: https://console.vast.ai/\n"
             "    strictness: strict\n"
             "    max_price: 1.5\n"
             "    max_machines: 2\n"
             "    image: vllm/vllm-openai:latest\n"
             "    disk: 60GiB\n"
             "    ssh_key: %s\n"
             "    setup: pip install x\n"
             "    filters: {gpu_name: \"RTX 4090\", geolocation: [US, CA], reliability2: {gte: "
             "0.99, lt: 1}, static_ip: true, x: null}\n"
             "    idle_release: 30m\n"
             "    release_on_exit: true\n",
             strrchr(key, '/') + 1);
    assert_int_equal(write_file(f->path, yaml), 0);
    size_t errors = 1;
    load_every_failure(f->path, &errors);
    assert_int_equal(errors, 0);

    assert_int_equal(write_file(f->path, "pods: {p: {setup: x}}\n"
                                         "clouds:\n"
                                         "  p: {}\n"
                                         "  local: {}\n"
                                         "  q:\n"
                                         "    provider: aws\n"
                                         "    api_key: ${X}\n"
                                         "    url: http://example.org\n"
                                         "    max_price: -1\n"
                                         "    ssh_key: /nonexistent\n"
                                         "    filters: {num_gpus: 1, gpu_name: A_B, geolocation: "
                                         "[Oregon], inet_down: {in: 1, gt: [2], bad: 3}}\n"),
                     0);
    errors = 0;
    load_every_failure(f->path, &errors);
    assert_true(errors >= 10);
    unlink(key);
    unlink(pub);
}

static void test_yaml_syntax_error(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(write_file(f->path, "models: [a, b\n"), 0);
    size_t errors = 0;
    load_every_failure(f->path, &errors);
    assert_int_equal(errors, 1);
}

static void test_missing_file(void **state)
{
    size_t errors = 0;
    load_every_failure("/nonexistent/yard.yaml", &errors);
    assert_int_equal(errors, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clouds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_syntax_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
