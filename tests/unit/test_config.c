#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "config/config.h"

/* ---- helpers -------------------------------------------------------- */

static struct config *parse_ok(const char *yaml)
{
    struct config_errors e = {0};
    struct config *c = config_parse(yaml, strlen(yaml), "yard.yaml", &e);
    for (size_t i = 0; i < e.n; i++)
        print_error("unexpected: %s\n", e.msgs[i]);
    assert_int_equal(e.n, 0);
    assert_non_null(c);
    config_errors_release(&e);
    return c;
}

/* Parses yaml and checks it is refused with exactly the messages in want. */
static void expect_errors(const char *yaml, const char *const *want)
{
    struct config_errors e = {0};
    struct config *c = config_parse(yaml, strlen(yaml), "yard.yaml", &e);
    assert_null(c);
    size_t n = 0;
    while (want[n])
        n++;
    int differ = e.n != n;
    for (size_t i = 0; i < n && i < e.n; i++)
        differ |= strcmp(e.msgs[i], want[i]) != 0;
    for (size_t i = 0; differ && i < e.n; i++)
        print_message("got: %s\n", e.msgs[i]);
    for (size_t i = 0; i < n && i < e.n; i++)
        assert_string_equal(e.msgs[i], want[i]);
    assert_int_equal(e.n, n);
    config_errors_release(&e);
}

static void expect_error(const char *yaml, const char *want)
{
    const char *const w[] = {want, NULL};
    expect_errors(yaml, w);
}

/* ---- error messages ------------------------------------------------- */

static void test_macros(void **state)
{
    /* The last declared first (one may use another), a model's own over the config's. */
    struct config *c = parse_ok("macros:\n"
                                "  bin: /opt/llama-server\n"
                                "  ctx: 4096\n"
                                "  args: --ctx-size ${ctx}\n"
                                "models:\n"
                                "  a:\n"
                                "    cmd: ${bin} ${args} --port ${PORT}\n"
                                "    env: [ \"CTX=${ctx}\", \"PLAIN=x=y\" ]\n"
                                "    cwd: /srv/${ctx}\n"
                                "  b:\n"
                                "    macros: { ctx: 8192 }\n"
                                "    cmd: ${bin} ${args} --port ${PORT}\n");
    assert_string_equal(c->models[0].cmd, "/opt/llama-server --ctx-size 4096 --port ${PORT}");
    assert_string_equal(c->models[0].env[0].key, "CTX");
    assert_string_equal(c->models[0].env[0].value, "4096");
    assert_string_equal(c->models[0].env[1].key, "PLAIN");
    assert_string_equal(c->models[0].env[1].value, "x=y");
    assert_string_equal(c->models[0].cwd, "/srv/4096");
    assert_string_equal(c->models[1].cmd, "/opt/llama-server --ctx-size 8192 --port ${PORT}");
    config_free(c);
    const char *const bad[] = {
        "yard.yaml:2:3: macros: 'PORT' is expanded by yard itself; give the macro another name",
        "yard.yaml:3:3: macros: invalid macro name 'a b'; use 1 to 63 letters, digits, _ or -",
        "yard.yaml:4:9: macros.self: the macro uses itself",
        "yard.yaml:5:9: macros.list: expected a string, got a list",
        "yard.yaml:9:17: models.m.env: 'X' is set twice",
        NULL,
    };
    expect_errors("macros:\n"
                  "  PORT: 1\n"
                  "  \"a b\": 2\n"
                  "  self: x${self}\n"
                  "  list: [1]\n"
                  "models:\n"
                  "  m:\n"
                  "    cmd: x\n"
                  "    env: [ X=1, X=2 ]\n",
                  bad);
}

static void test_unknown_key_suggests(void **state)
{
    const char *const want[] = {
        "yard.yaml:2:3: models.qwen: missing 'cmd'; give the command that starts the engine",
        "yard.yaml:3:5: unknown key 'comand' in model 'qwen'; did you mean 'cmd'?",
        NULL,
    };
    expect_errors("models:\n"
                  "  qwen:\n"
                  "    comand: \"vllm serve x\"\n",
                  want);
    expect_error("lisen: 127.0.0.1:8080\n",
                 "yard.yaml:1:1: unknown key 'lisen' at top level; did you mean 'listen'?");
    expect_error("router: { polcy: fifo }\n",
                 "yard.yaml:1:11: unknown key 'polcy' in 'router'; did you mean 'policy'?");
    expect_error("models:\n"
                 "  q:\n"
                 "    cmd: x\n"
                 "    eviction: { wieghts: offload }\n",
                 "yard.yaml:4:17: unknown key 'wieghts' in 'models.q.eviction'; did you mean "
                 "'weights'?");
    /* Nothing close: the valid keys are listed instead. */
    expect_error("defaults: { zzzzzz: 1 }\n",
                 "yard.yaml:1:13: unknown key 'zzzzzz' in 'defaults'; valid keys: ttl, "
                 "startup_timeout, stop_timeout");
}

static void test_unknown_engine(void **state)
{
    expect_error("models:\n"
                 "  qwen:\n"
                 "    engine: vlm\n"
                 "    cmd: serve\n",
                 "yard.yaml:3:13: models.qwen.engine: unknown engine 'vlm'; use vllm, sglang, "
                 "llamacpp or generic");
}

static void test_port_conflicts(void **state)
{
    const char *const want[] = {
        "yard.yaml:8:11: models.b.port: port 7000 is already used by model 'a'",
        "yard.yaml:11:11: models.c.port: port 9000 is the listen port; choose another",
        NULL,
    };
    expect_errors("listen: 127.0.0.1:9000\n"
                  "models:\n"
                  "  a:\n"
                  "    cmd: a\n"
                  "    port: 7000\n"
                  "  b:\n"
                  "    cmd: b\n"
                  "    port: 7000\n"
                  "  c:\n"
                  "    cmd: c\n"
                  "    port: 9000\n",
                  want);
    expect_error("models:\n"
                 "  a:\n"
                 "    cmd: a\n"
                 "    port: 70000\n",
                 "yard.yaml:4:11: models.a.port: port 70000 is out of range; use 1 to 65535 or "
                 "'auto'");
}

static void test_alias_collision(void **state)
{
    const char *const want[] = {
        "yard.yaml:4:18: models.a.aliases: alias 'b' is the name of model 'b'",
        "yard.yaml:7:15: models.b.aliases: alias 'x' is already an alias of model 'a'",
        NULL,
    };
    expect_errors("models:\n"
                  "  a:\n"
                  "    cmd: a\n"
                  "    aliases: [x, b]\n"
                  "  b:\n"
                  "    cmd: b\n"
                  "    aliases: [x]\n",
                  want);
}

static void test_group_unknown_member(void **state)
{
    expect_error("models:\n"
                 "  a:\n"
                 "    cmd: a\n"
                 "groups:\n"
                 "  g1: { exclusive: true, members: [a, nope] }\n"
                 "  g2: { exclusive: true, members: [a] }\n",
                 "yard.yaml:5:39: groups.g1.members: unknown model 'nope'");
    /* Groups may come before the models they name; messages stay in file order. */
    const char *const want[] = {
        "yard.yaml:2:21: groups.g.members: unknown model 'b'",
        "yard.yaml:2:24: groups.g.members: 'q' is model 'a', already listed",
        "yard.yaml:5:13: models.a.engine: unknown engine 'x'; use vllm, sglang, llamacpp or "
        "generic",
        NULL,
    };
    expect_errors("groups:\n"
                  "  g: { members: [a, b, q] }\n"
                  "models:\n"
                  "  a:\n"
                  "    engine: x\n"
                  "    cmd: a\n"
                  "    aliases: [q]\n",
                  want);
}

static void test_durations(void **state)
{
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd: x\n"
                 "    ttl: -5s\n",
                 "yard.yaml:4:10: models.qwen.ttl: negative duration '-5s'; use 0 or more, as "
                 "'30s' or '10m'");
    const char *const want[] = {
        "yard.yaml:4:10: models.qwen.ttl: duration '5000d' is out of range; use at most 3650d",
        "yard.yaml:5:22: models.qwen.startup_timeout: must be more than 0",
        "yard.yaml:6:19: models.qwen.stop_timeout: '2h' is too long to wait for a stop; use at "
        "most 1h",
        NULL,
    };
    expect_errors("models:\n"
                  "  qwen:\n"
                  "    cmd: x\n"
                  "    ttl: 5000d\n"
                  "    startup_timeout: 0\n"
                  "    stop_timeout: 2h\n",
                  want);
    expect_error("defaults: { ttl: 10 minutes }\n",
                 "yard.yaml:1:18: defaults.ttl: invalid duration '10 minutes'; use a number and "
                 "a unit, as '500ms', '30s', '10m' or '2h'");
    expect_error("defaults: { startup_timeout: 0s }\n",
                 "yard.yaml:1:30: defaults.startup_timeout: must be more than 0");
    expect_error("router: { max_wait: -1 }\n",
                 "yard.yaml:1:21: router.max_wait: negative duration '-1'; use 0 or more, as "
                 "'30s' or '10m'");
}

static void test_empty_and_bad_cmd(void **state)
{
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd: \"\"\n",
                 "yard.yaml:3:10: models.qwen.cmd: empty command");
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd:\n",
                 "yard.yaml:3:9: models.qwen.cmd: empty command");
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd: \"   \"\n",
                 "yard.yaml:3:10: models.qwen.cmd: empty command");
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd: serve --chat-template 'abc\n",
                 "yard.yaml:3:10: models.qwen.cmd: unterminated single quote");
}

/* stop_cmd: macros checked as in cmd, the config's macros expanded, never empty. */
static void test_stop_cmd(void **state)
{
    (void)state;
    struct config *c = parse_ok("macros:\n"
                                "  rt: podman\n"
                                "models:\n"
                                "  m:\n"
                                "    cmd: ${rt} run --rm --name yard-${NAME} -p ${PORT}:8000 img\n"
                                "    stop_cmd: ${rt} stop yard-${NAME}\n"
                                "  n:\n"
                                "    cmd: serve --port ${PORT}\n");
    assert_string_equal(c->models[0].stop_cmd, "podman stop yard-${NAME}");
    assert_null(c->models[1].stop_cmd);
    config_free(c);
    expect_error("models:\n"
                 "  m:\n"
                 "    cmd: serve --port ${PORT}\n"
                 "    stop_cmd: docker stop ${PID}\n",
                 "yard.yaml:4:15: models.m.stop_cmd: unknown macro '${PID}'; use ${PORT}, "
                 "${NAME}, ${MODEL}, ${GPUS}, ${API_KEY} or ${env.VAR}, or define it under "
                 "'macros:'");
    expect_error("models:\n"
                 "  m:\n"
                 "    cmd: serve --port ${PORT}\n"
                 "    stop_cmd:\n",
                 "yard.yaml:4:14: models.m.stop_cmd: empty command; give the command that "
                 "stops the engine, or remove 'stop_cmd'");
    expect_error("models:\n"
                 "  m:\n"
                 "    cmd: serve --port ${PORT}\n"
                 "    stop_cmd: docker stop 'yard\n",
                 "yard.yaml:4:15: models.m.stop_cmd: unterminated single quote");
    /* llama-swap's name for it is pointed at yard's. */
    expect_error("models:\n"
                 "  m:\n"
                 "    cmd: serve --port ${PORT}\n"
                 "    cmdStop: docker stop m\n",
                 "yard.yaml:4:5: unknown key 'cmdStop' in model 'm'; that is llama-swap's: yard's "
                 "is 'stop_cmd' ('yard import llama-swap FILE' translates a whole llama-swap "
                 "config)");
}

static void test_unknown_macro(void **state)
{
    expect_error(
        "models:\n"
        "  qwen:\n"
        "    cmd: serve --port ${PROT}\n",
        "yard.yaml:3:10: models.qwen.cmd: unknown macro '${PROT}'; use ${PORT}, "
        "${NAME}, ${MODEL}, ${GPUS}, ${API_KEY} or ${env.VAR}, or define it under 'macros:'");
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd: serve --port ${PORT\n",
                 "yard.yaml:3:10: models.qwen.cmd: unterminated macro '${PORT'; close it with "
                 "'}'");
    expect_error(
        "models:\n"
        "  qwen:\n"
        "    cmd: serve ${env.A-B}\n",
        "yard.yaml:3:10: models.qwen.cmd: unknown macro '${env.A-B}'; use ${PORT}, "
        "${NAME}, ${MODEL}, ${GPUS}, ${API_KEY} or ${env.VAR}, or define it under 'macros:'");
    /* Macros inside single quotes are literal text, so they are not checked. */
    struct config *c = parse_ok("models:\n"
                                "  qwen:\n"
                                "    cmd: serve '${WHATEVER}' \\${PROT}\n");
    config_free(c);
}

static void test_duplicate_keys(void **state)
{
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd: a\n"
                 "    cmd: b\n",
                 "yard.yaml:4:5: duplicate key 'cmd' in model 'qwen' (first at line 3); remove "
                 "one");
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd: a\n"
                 "  qwen:\n"
                 "    cmd: b\n",
                 "yard.yaml:4:3: duplicate key 'qwen' in 'models' (first at line 2); remove one");
    expect_error("listen: 127.0.0.1:1\n"
                 "listen: 127.0.0.1:2\n",
                 "yard.yaml:2:1: duplicate key 'listen' at top level (first at line 1); remove "
                 "one");
}

static void test_yaml_syntax_error(void **state)
{
    expect_error("models:\n"
                 "  qwen:\n"
                 "    cmd: [a, b\n",
                 "yard.yaml:4:1: invalid yaml: did not find expected ',' or ']' (while parsing a "
                 "flow sequence at line 3)");
    expect_error("models:\n"
                 "  qwen: x\n"
                 "   cmd: y\n",
                 "yard.yaml:3:7: invalid yaml: mapping values are not allowed in this context");
    expect_error("listen: 127.0.0.1:1\n"
                 "---\n"
                 "listen: 127.0.0.1:2\n",
                 "yard.yaml:2:1: a second yaml document; keep the config in one");
}

static void test_wrong_types(void **state)
{
    const char *const want[] = {
        "yard.yaml:3:10: models.qwen.cmd: expected a string, got a list",
        "yard.yaml:4:14: models.qwen.aliases: expected a list, got 'q'",
        "yard.yaml:5:11: models.qwen.env: 'A' is not NAME=VALUE with a valid variable name "
        "(letters, "
        "digits and _, not starting with a digit)",
        "yard.yaml:6:11: models.qwen.gpus: expected a GPU count or a list of GPU indexes, got a "
        "mapping",
        "yard.yaml:7:18: models.qwen.concurrency: expected an integer, got 'many'",
        "yard.yaml:8:11: models.qwen.port: expected a port number or 'auto', got 'any'",
        NULL,
    };
    expect_errors("models:\n"
                  "  qwen:\n"
                  "    cmd: [a, b]\n"
                  "    aliases: q\n"
                  "    env: [A]\n"
                  "    gpus: {n: 1}\n"
                  "    concurrency: many\n"
                  "    port: any\n",
                  want);
    expect_error("models: [a, b]\n",
                 "yard.yaml:1:9: models: expected a mapping of model names, got a list");
    expect_error("- a\n", "yard.yaml:1:1: config: expected a mapping of keys such as 'listen' and "
                          "'models', got a list");
    expect_error("groups:\n"
                 "  g: { exclusive: maybe, members: [] }\n",
                 "yard.yaml:2:19: groups.g.exclusive: expected true or false, got 'maybe'");
}

static void test_top_level_errors(void **state)
{
    const char *const want[] = {
        "yard.yaml:1:9: listen: invalid address 'localhost'; use HOST:PORT, as "
        "'127.0.0.1:8080'",
        "yard.yaml:2:15: log_max_size: invalid size '10 parsecs'; use a number and a unit, as "
        "'20GiB' or '512MiB'",
        "yard.yaml:3:22: router.max_queue: 0 is out of range; use 1 to 1000000",
        "yard.yaml:3:33: router.policy: unknown policy 'lifo'; use fifo, cost_aware or "
        "time_slice",
        NULL,
    };
    expect_errors("listen: localhost\n"
                  "log_max_size: 10 parsecs\n"
                  "router: { max_queue: 0, policy: lifo }\n",
                  want);
    expect_error("listen: 0.0.0.0:0\n",
                 "yard.yaml:1:9: listen: port '0' is out of range; use 1 to 65535");
    expect_error("router: { amortization: lots }\n",
                 "yard.yaml:1:25: router.amortization: expected a number, got 'lots'");
    expect_error("router: { amortization: -1 }\n",
                 "yard.yaml:1:25: router.amortization: -1 is out of range; use 0 to 1000");
    expect_error("router: { coalesce_window: soon }\n",
                 "yard.yaml:1:28: router.coalesce_window: invalid duration 'soon'; use a number "
                 "and a unit, as '500ms', '30s', '10m' or '2h'");
    expect_error("models:\n"
                 "  a/b:\n"
                 "    cmd: x\n",
                 "yard.yaml:2:3: models: invalid model name 'a/b'; use 1 to 128 letters, "
                 "digits, '.', '_', '-', ':', '@', '+' or '~', not starting with '.' or '-'");
    expect_error("gpus: [{index: 0, name: A}]\n",
                 "yard.yaml:1:8: gpus[0]: missing 'memory'; give the GPU's memory, as '80GiB'");
    expect_error("models:\n"
                 "  a:\n"
                 "    cmd: x\n"
                 "    restart: always\n",
                 "yard.yaml:4:14: models.a.restart: unknown value 'always'; use never or "
                 "on-failure");
}

static void test_load_file(void **state)
{
    struct config_errors e = {0};
    assert_null(config_load("/nonexistent/yard.yaml", &e));
    assert_int_equal(e.n, 1);
    assert_string_equal(
        e.msgs[0], "/nonexistent/yard.yaml: cannot read the config: no such file or directory");
    config_errors_release(&e);

    char path[] = "/tmp/yard-config-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "models:\n  m:\n    cmd: serve\n    engine: bogus\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_null(config_load(path, &e));
    assert_int_equal(e.n, 1);
    char *want = NULL;
    assert_true(asprintf(&want,
                         "%s:4:13: models.m.engine: unknown engine 'bogus'; use vllm, sglang, "
                         "llamacpp or generic",
                         path) > 0);
    assert_string_equal(e.msgs[0], want);
    free(want);
    config_errors_release(&e);
    unlink(path);
}

/* ---- valid configs -------------------------------------------------- */

static void test_defaults(void **state)
{
    struct config *c = parse_ok("");
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_true(c->gpus_auto);
    assert_int_equal(c->n_gpus, 0);
    assert_int_equal(c->default_ttl_ms, 0);
    assert_int_equal(c->default_startup_timeout_ms, 600000);
    assert_int_equal(c->default_stop_timeout_ms, 10000);
    assert_int_equal(c->start_port, 5800);
    assert_int_equal(c->router_max_queue, 256);
    assert_int_equal(c->router_max_wait_ms, 300000);
    assert_string_equal(c->router_policy, "fifo");
    assert_int_equal(c->log_max_bytes, 10u << 20);
    assert_int_equal(c->n_models, 0);
    assert_int_equal(c->n_groups, 0);
    config_free(c);

    c = parse_ok("models: {}\ngroups:\n");
    assert_int_equal(c->n_models, 0);
    config_free(c);

    c = parse_ok("defaults: { ttl: 1h, stop_timeout: 3s }\n"
                 "models:\n"
                 "  m:\n"
                 "    cmd: run\n");
    const struct config_model *m = &c->models[0];
    assert_string_equal(m->engine, "generic");
    assert_string_equal(m->model_id, "m");
    assert_int_equal(m->port, 0);
    assert_int_equal(m->gpu_count, 0);
    assert_int_equal(m->ttl_ms, 3600000);
    assert_int_equal(m->startup_timeout_ms, 600000);
    assert_int_equal(m->stop_timeout_ms, 3000);
    assert_int_equal(m->restart, CONFIG_RESTART_NEVER);
    assert_int_equal(m->max_restarts, 5);
    assert_int_equal(m->concurrency, 0);
    assert_int_equal(m->evict_weights, CONFIG_WEIGHTS_DISCARD);
    assert_int_equal(m->evict_process, CONFIG_PROCESS_STOP);
    assert_null(m->pod);
    assert_null(m->cwd);
    assert_string_equal(m->health_path, "/health");
    assert_int_equal(m->health_status, 200);
    config_free(c);
}

static const char full_config[] =
    "listen: 0.0.0.0:9090\n"
    "api_keys: [ \"sk-one\", sk-two ]\n"
    "gpus: [{index: 0, name: \"NVIDIA H100\", memory: 80GiB}, {index: 1, memory: 24GB}]\n"
    "defaults: { ttl: 10m, startup_timeout: 5m, stop_timeout: 15s }\n"
    "router:   { max_queue: 64, max_wait: 90s, policy: cost_aware }\n"
    "start_port: 6100\n"
    "log_max_size: 512MiB\n"
    "models:\n"
    "  qwen-7b:\n"
    "    engine: vllm\n"
    "    cmd: \"vllm serve ${MODEL} --port ${PORT} --served-model-name ${NAME}\"\n"
    "    model: Qwen/Qwen2.5-7B-Instruct\n"
    "    aliases: [ qwen, q7 ]\n"
    "    env: { HF_HOME: /models, VLLM_LOGGING_LEVEL: DEBUG }\n"
    "    cwd: /srv\n"
    "    port: auto\n"
    "    gpus: 1\n"
    "    vram: 20GiB\n"
    "    ttl: 30m\n"
    "    restart: on-failure\n"
    "    max_restarts: 3\n"
    "    concurrency: 4\n"
    "    eviction: { weights: offload, process: keep_running }\n"
    "    pod: gpu-box-1\n"
    "  llama:\n"
    "    engine: llamacpp\n"
    "    cmd: |\n"
    "      llama-server -m /m/llama.gguf \\\n"
    "        --port ${PORT}\n"
    "    port: 7001\n"
    "    gpus: [0, 1]\n"
    "    startup_timeout: 500ms\n"
    "    stop_timeout: 1h\n"
    "    ttl: 0\n"
    "    eviction: { weights: retain, process: cuda_suspend }\n"
    "  tool:\n"
    "    engine: generic\n"
    "    cmd: ./tool --listen 127.0.0.1:${PORT}\n"
    "    health: { path: /ready, status: 204 }\n"
    "    eviction: { weights: discard, process: checkpoint }\n"
    "groups:\n"
    "  big: { exclusive: true, members: [ qwen, llama ] }\n"
    "  all: { exclusive: yes, members: [ qwen-7b, tool ] }\n"
    "  loose: { members: [ tool ] }\n";

static void test_full_round_trip(void **state)
{
    struct config *c = parse_ok(full_config);
    assert_string_equal(c->path, "yard.yaml");
    assert_string_equal(c->listen_host, "0.0.0.0");
    assert_int_equal(c->listen_port, 9090);
    assert_int_equal(c->n_api_keys, 2);
    assert_string_equal(c->api_keys[0], "sk-one");
    assert_string_equal(c->api_keys[1], "sk-two");
    assert_false(c->gpus_auto);
    assert_int_equal(c->n_gpus, 2);
    assert_int_equal(c->gpus[0].index, 0);
    assert_string_equal(c->gpus[0].name, "NVIDIA H100");
    assert_int_equal(c->gpus[0].memory, 80ull << 30);
    assert_int_equal(c->gpus[1].index, 1);
    assert_null(c->gpus[1].name);
    assert_int_equal(c->gpus[1].memory, 24000000000ull);
    assert_int_equal(c->default_ttl_ms, 600000);
    assert_int_equal(c->default_startup_timeout_ms, 300000);
    assert_int_equal(c->default_stop_timeout_ms, 15000);
    assert_int_equal(c->router_max_queue, 64);
    assert_int_equal(c->router_max_wait_ms, 90000);
    assert_string_equal(c->router_policy, "cost_aware");
    assert_int_equal(c->start_port, 6100);
    assert_int_equal(c->log_max_bytes, 512ull << 20);
    assert_int_equal(c->n_models, 3);

    const struct config_model *q = &c->models[0];
    assert_string_equal(q->name, "qwen-7b");
    assert_int_equal(q->line, 9);
    assert_int_equal(q->col, 3);
    assert_string_equal(q->engine, "vllm");
    assert_string_equal(q->cmd, "vllm serve ${MODEL} --port ${PORT} --served-model-name ${NAME}");
    assert_string_equal(q->model_id, "Qwen/Qwen2.5-7B-Instruct");
    assert_int_equal(q->n_aliases, 2);
    assert_string_equal(q->aliases[0], "qwen");
    assert_string_equal(q->aliases[1], "q7");
    assert_int_equal(q->n_env, 2);
    assert_string_equal(q->env[0].key, "HF_HOME");
    assert_string_equal(q->env[0].value, "/models");
    assert_string_equal(q->env[1].key, "VLLM_LOGGING_LEVEL");
    assert_string_equal(q->env[1].value, "DEBUG");
    assert_string_equal(q->cwd, "/srv");
    assert_int_equal(q->port, 0);
    assert_int_equal(q->gpu_count, 1);
    assert_int_equal(q->n_gpu_list, 0);
    assert_int_equal(q->vram, 20ull << 30);
    assert_int_equal(q->ttl_ms, 1800000);
    assert_int_equal(q->startup_timeout_ms, 300000);
    assert_int_equal(q->stop_timeout_ms, 15000);
    assert_int_equal(q->restart, CONFIG_RESTART_ON_FAILURE);
    assert_int_equal(q->max_restarts, 3);
    assert_int_equal(q->concurrency, 4);
    assert_int_equal(q->evict_weights, CONFIG_WEIGHTS_OFFLOAD);
    assert_int_equal(q->evict_process, CONFIG_PROCESS_KEEP_RUNNING);
    assert_string_equal(q->pod, "gpu-box-1");

    const struct config_model *l = &c->models[1];
    assert_string_equal(l->name, "llama");
    assert_string_equal(l->engine, "llamacpp");
    assert_string_equal(l->cmd, "llama-server -m /m/llama.gguf \\\n  --port ${PORT}\n");
    assert_string_equal(l->model_id, "llama");
    assert_int_equal(l->port, 7001);
    assert_int_equal(l->gpu_count, 2);
    assert_int_equal(l->n_gpu_list, 2);
    assert_int_equal(l->gpu_list[0], 0);
    assert_int_equal(l->gpu_list[1], 1);
    assert_int_equal(l->startup_timeout_ms, 500);
    assert_int_equal(l->stop_timeout_ms, 3600000);
    assert_int_equal(l->ttl_ms, 0);
    assert_int_equal(l->evict_weights, CONFIG_WEIGHTS_RETAIN);
    assert_int_equal(l->evict_process, CONFIG_PROCESS_CUDA_SUSPEND);
    assert_int_equal(l->vram, 0);

    const struct config_model *t = &c->models[2];
    assert_string_equal(t->engine, "generic");
    assert_string_equal(t->health_path, "/ready");
    assert_int_equal(t->health_status, 204);
    assert_int_equal(t->evict_weights, CONFIG_WEIGHTS_DISCARD);
    assert_int_equal(t->evict_process, CONFIG_PROCESS_CHECKPOINT);

    assert_int_equal(c->n_groups, 3);
    assert_string_equal(c->groups[0].name, "big");
    assert_true(c->groups[0].exclusive);
    assert_int_equal(c->groups[0].n_members, 2);
    /* Members written as aliases are kept by model name. */
    assert_string_equal(c->groups[0].members[0], "qwen-7b");
    assert_string_equal(c->groups[0].members[1], "llama");
    assert_true(c->groups[1].exclusive);
    assert_string_equal(c->groups[1].members[0], "qwen-7b");
    assert_string_equal(c->groups[1].members[1], "tool");
    assert_false(c->groups[2].exclusive);

    assert_ptr_equal(config_find_model(c, "qwen-7b"), q);
    assert_ptr_equal(config_find_model(c, "q7"), q);
    assert_ptr_equal(config_find_model(c, "llama"), l);
    assert_null(config_find_model(c, "nope"));
    config_free(c);
}

static void test_sizes_and_durations(void **state)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } durs[] = {{"500ms", 500},     {"300s", 300000}, {"10m", 600000},
                {"1h30m", 5400000}, {"45", 45000},    {"1d", 86400000}};
    for (size_t i = 0; i < sizeof durs / sizeof durs[0]; i++) {
        char yaml[128];
        snprintf(yaml, sizeof yaml, "models:\n  m:\n    cmd: x\n    ttl: %s\n", durs[i].text);
        struct config *c = parse_ok(yaml);
        assert_int_equal(c->models[0].ttl_ms, durs[i].ms);
        config_free(c);
    }
    static const struct {
        const char *text;
        uint64_t bytes;
    } sizes[] = {{"20GiB", 20ull << 30},
                 {"10GB", 10000000000ull},
                 {"512MiB", 512ull << 20},
                 {"1.5GiB", 3ull << 29},
                 {"4096", 4096}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char yaml[128];
        snprintf(yaml, sizeof yaml, "models:\n  m:\n    cmd: x\n    vram: %s\n", sizes[i].text);
        struct config *c = parse_ok(yaml);
        assert_int_equal(c->models[0].vram, sizes[i].bytes);
        config_free(c);
    }
    expect_error("models:\n  m:\n    cmd: x\n    vram: lots\n",
                 "yard.yaml:4:11: models.m.vram: invalid size 'lots'; use a number and a unit, as "
                 "'20GiB' or '512MiB'");
}

static void test_two_exclusive_groups_ok(void **state)
{
    struct config *c = parse_ok("listen: \"[::1]:8081\"\n"
                                "models:\n"
                                "  a: { cmd: a, port: 8080 }\n"
                                "groups:\n"
                                "  g1: { exclusive: true, members: [a] }\n"
                                "  g2: { exclusive: true, members: [a] }\n");
    assert_string_equal(c->listen_host, "::1");
    assert_int_equal(c->listen_port, 8081);
    assert_int_equal(c->models[0].port, 8080);
    assert_int_equal(c->n_groups, 2);
    config_free(c);
}

/* ---- argv ----------------------------------------------------------- */

static void expect_argv(const char *cmd, const char *const *want)
{
    char err[128] = "";
    char **argv = config_split_argv(cmd, err, sizeof err);
    if (!argv)
        print_error("split '%s': %s\n", cmd, err);
    assert_non_null(argv);
    size_t i;
    for (i = 0; want[i]; i++) {
        assert_non_null(argv[i]);
        assert_string_equal(argv[i], want[i]);
    }
    assert_null(argv[i]);
    config_argv_free(argv);
}

static void expect_split_error(const char *cmd, const char *want)
{
    char err[128] = "";
    assert_null(config_split_argv(cmd, err, sizeof err));
    assert_string_equal(err, want);
}

static void test_split_argv(void **state)
{
    expect_argv("a b  c", (const char *const[]){"a", "b", "c", NULL});
    expect_argv("  lead\ttab\nnl  ", (const char *const[]){"lead", "tab", "nl", NULL});
    expect_argv("'a b' \"c d\"", (const char *const[]){"a b", "c d", NULL});
    expect_argv("'it''s' x\"y\"'z'", (const char *const[]){"its", "xyz", NULL});
    expect_argv("\"say \\\"hi\\\" \\\\ \\$HOME \\n\"",
                (const char *const[]){"say \"hi\" \\ $HOME \\n", NULL});
    expect_argv("'no \\escape \"here\"'", (const char *const[]){"no \\escape \"here\"", NULL});
    expect_argv("a\\ b \\'c", (const char *const[]){"a b", "'c", NULL});
    expect_argv("'' \"\"", (const char *const[]){"", "", NULL});
    expect_argv("run \\\n  --flag", (const char *const[]){"run", "--flag", NULL});
    expect_argv("no $VAR ${PORT} *.txt",
                (const char *const[]){"no", "$VAR", "${PORT}", "*.txt", NULL});

    expect_split_error("a 'b", "unterminated single quote");
    expect_split_error("a \"b", "unterminated double quote");
    expect_split_error("a \"b\\\"", "unterminated double quote");
    expect_split_error("a b\\", "trailing backslash; remove it or write '\\\\'");
    expect_split_error("", "empty command");
    expect_split_error(" \t\n", "empty command");
    expect_split_error(NULL, "empty command");

    /* A small err buffer truncates the message, never overflows. */
    char small[6];
    assert_null(config_split_argv("'x", small, sizeof small));
    assert_string_equal(small, "unter");
    assert_null(config_split_argv("'x", NULL, 0));
}

static void test_expand_cmd(void **state)
{
    struct config *c =
        parse_ok("models:\n"
                 "  qwen:\n"
                 "    model: Qwen/Qwen2.5\n"
                 "    env: { OWN: \"from model\" }\n"
                 "    cmd: >-\n"
                 "      serve ${MODEL} --port=${PORT} --name \"${NAME}\" --gpus ${GPUS}\n"
                 "      --a ${env.YARD_TEST_SPACED} --b '${NAME}' --c \\${PORT} --d ${env.OWN}x\n"
                 "  bad:\n"
                 "    cmd: serve ${env.YARD_TEST_UNSET}\n");
    setenv("YARD_TEST_SPACED", "two words", 1);
    unsetenv("YARD_TEST_UNSET");
    char err[256] = "";
    struct config_cmd c0 = config_model_cmd(&c->models[0]), c1 = config_model_cmd(&c->models[1]);
    char **argv = config_expand_cmd(&c0, 5801, "0,1", err, sizeof err);
    assert_non_null(argv);
    const char *const want[] = {"serve",     "Qwen/Qwen2.5", "--port=5801", "--name",
                                "qwen",      "--gpus",       "0,1",         "--a",
                                "two words", "--b",          "${NAME}",     "--c",
                                "${PORT}",   "--d",          "from modelx", NULL};
    size_t i;
    for (i = 0; want[i]; i++) {
        assert_non_null(argv[i]);
        assert_string_equal(argv[i], want[i]);
    }
    assert_null(argv[i]);
    config_argv_free(argv);

    assert_null(config_expand_cmd(&c1, 5802, "", err, sizeof err));
    assert_string_equal(
        err, "environment variable 'YARD_TEST_UNSET' is not set (used in model 'bad' cmd)");
    setenv("YARD_TEST_UNSET", "", 1);
    argv = config_expand_cmd(&c1, 5802, "", err, sizeof err);
    assert_non_null(argv);
    assert_string_equal(argv[1], "");
    config_argv_free(argv);
    unsetenv("YARD_TEST_UNSET");

    /* A template built by hand (as an instance spec's), never checked by the loader. */
    struct config_cmd m = {.name = "x", .cmd = "run ${WHAT}"};
    assert_null(config_expand_cmd(&m, 1, "", err, sizeof err));
    assert_string_equal(err, "unknown macro '${WHAT}' in model 'x' cmd; use ${PORT}, ${NAME}, "
                             "${MODEL}, ${GPUS}, ${API_KEY} or ${env.VAR}, or define it under "
                             "'macros:'");
    m.cmd = "run --gpus=${GPUS} ${MODEL}";
    argv = config_expand_cmd(&m, 1, NULL, err, sizeof err);
    assert_non_null(argv);
    assert_string_equal(argv[1], "--gpus=");
    assert_string_equal(argv[2], "x");
    config_argv_free(argv);
    config_free(c);
}

/*
 * The port a cmd gives its engine: ${PORT}, a literal --port (or a
 * container's published host port) taken as the model's port, or refused.
 */
/* What loads but is likely a mistake: a warning with its position; the config still loads. */
static void test_warnings(void **state)
{
    struct config *c = parse_ok("");
    assert_int_equal(c->n_warnings, 1);
    assert_non_null(strstr(c->warnings[0], "yard.yaml: warning: the file is empty"));
    config_free(c);

    c = parse_ok("models: {}\n");
    assert_int_equal(c->n_warnings, 1);
    assert_non_null(strstr(c->warnings[0], "yard.yaml:1:9: warning: no models"));
    config_free(c);

    c = parse_ok("gpus: [{index: 0, memory: 24GiB}, {index: 1, memory: 48GiB}]\n"
                 "models:\n"
                 "  big:\n    cmd: x --port ${PORT}\n    vram: 80GiB\n"
                 "  two:\n    cmd: x --port ${PORT}\n    gpus: 2\n    vram: 80GiB\n"
                 "  fits:\n    cmd: x --port ${PORT}\n    gpus: 2\n    vram: 40GiB\n"
                 "  away:\n    cmd: x --port ${PORT}\n    pod: box\n    vram: 80GiB\n"
                 "groups:\n  g: { members: [] }\n");
    assert_int_equal(c->n_warnings, 3);
    assert_string_equal(
        c->warnings[0],
        "yard.yaml:5:11: warning: models.big.vram: 80.0GiB is more than any declared "
        "GPU holds (the largest has 48.0GiB); the model can never be loaded: lower "
        "vram or declare a larger GPU");
    assert_string_equal(
        c->warnings[1],
        "yard.yaml:9:11: warning: models.two.vram: the model needs 40.0GiB on each of 2 "
        "GPUs and 1 declared GPUs are that large; it can never be loaded: lower "
        "vram or gpus, or declare more GPUs");
    assert_non_null(strstr(c->warnings[2],
                           "yard.yaml:19:17: warning: groups.g.members: the group has "
                           "no members"));
    config_free(c);

    /* a model on a pod, or GPUs not declared: nothing to say */
    c = parse_ok("models:\n  big:\n    cmd: x --port ${PORT}\n    vram: 800GiB\n");
    assert_int_equal(c->n_warnings, 0);
    config_free(c);
}

static void test_cmd_port(void **state)
{
    (void)state;
    static const struct {
        const char *engine, *cmd;
        int port;
    } taken[] = {
        {"vllm", "vllm serve m --port ${PORT}", 0},
        {"vllm", "sh -c \"exec vllm serve m --port ${PORT}\"", 0},
        {"vllm", "vllm serve m --port 9000", 9000},
        {"sglang", "python -m sglang.launch_server --port=9001", 9001},
        {"llamacpp", "llama-server -m x.gguf --port 9002 --port 9004", 9004},
        {"generic", "python app.py", 0},
        {"generic", "python app.py --port 9005", 9005},
        {"vllm", "docker run -p 9006:8000 vllm/vllm-openai --port 8000", 9006},
        {"vllm", "/usr/bin/podman run --publish=127.0.0.1:9007:8000 img --port 8000", 9007},
        {"vllm", "docker run --network host img --port 9008", 9008},
        {"vllm", "docker run -p ${PORT}:8000 img --port 8000", 0},
    };
    for (size_t i = 0; i < sizeof taken / sizeof taken[0]; i++) {
        char yaml[512];
        snprintf(yaml, sizeof yaml, "models:\n  m:\n    engine: %s\n    cmd: '%s'\n",
                 taken[i].engine, taken[i].cmd);
        struct config *c = parse_ok(yaml);
        if (c->models[0].port != taken[i].port)
            fail_msg("'%s': port %d, expected %d", taken[i].cmd, c->models[0].port, taken[i].port);
        config_free(c);
    }
    const char *no_port = "yard.yaml:4:10: models.m.cmd: the command gives the engine no port; "
                          "add --port ${PORT} (yard picks a free one) or set port: N";
    expect_error("models:\n  m:\n    engine: vllm\n    cmd: vllm serve m\n", no_port);
    expect_error("models:\n  m:\n    engine: vllm\n    cmd: vllm serve m --port '${PORT}'\n",
                 no_port);
    expect_error("models:\n  m:\n    engine: sglang\n    cmd: \"python -m s --port x\"\n", no_port);
    expect_error("models:\n  m:\n    engine: vllm\n    cmd: docker run -p 8000 img\n", no_port);
    expect_error("models:\n  m:\n    engine: vllm\n    cmd: vllm serve m\n    port: auto\n",
                 no_port);
    /* port: given: the engine's port comes from yard's config alone. */
    struct config *c = parse_ok("models:\n  m:\n    engine: vllm\n    cmd: vllm serve m\n"
                                "    port: 8000\n  n:\n    engine: vllm\n"
                                "    cmd: vllm serve n --port 8001\n    port: 8001\n");
    assert_int_equal(c->models[0].port, 8000);
    assert_int_equal(c->models[1].port, 8001);
    config_free(c);
    expect_error("models:\n  m:\n    engine: vllm\n    cmd: vllm serve m --port 9001\n"
                 "    port: 9000\n",
                 "yard.yaml:4:10: models.m.cmd: the command listens on port 9001 but 'port' is "
                 "9000; make them agree, or write --port ${PORT}");
    expect_error("models:\n  a:\n    engine: vllm\n    cmd: vllm serve a --port 9000\n"
                 "  b:\n    engine: generic\n    cmd: app --port=9000\n",
                 "yard.yaml:7:10: models.b.cmd: port 9000 is already used by model 'a'");
    expect_error("models:\n  a:\n    engine: vllm\n    cmd: vllm serve a\n    port: 9000\n"
                 "  b:\n    engine: vllm\n    cmd: vllm serve b --port 9000\n",
                 "yard.yaml:8:10: models.b.cmd: port 9000 is already used by model 'a'");
    expect_error("listen: 127.0.0.1:9000\nmodels:\n  a:\n    engine: vllm\n"
                 "    cmd: vllm serve a --port 9000\n",
                 "yard.yaml:5:10: models.a.cmd: port 9000 is the listen port; choose another");
    /* A port: that is refused is reported alone. */
    expect_error("models:\n  m:\n    engine: vllm\n    cmd: vllm serve m\n    port: 70000\n",
                 "yard.yaml:5:11: models.m.port: port 70000 is out of range; use 1 to 65535 or "
                 "'auto'");
}

/* "local" is this machine: no pod is named so, and no model's pod: says it. */
static void test_local_reserved(void **state)
{
    (void)state;
    expect_error("pods:\n  local: { setup: \"true\" }\n",
                 "yard.yaml:2:3: pods: 'local' is reserved for this machine; name the pod "
                 "differently");
    expect_error("models:\n  m:\n    cmd: x\n    pod: local\n",
                 "yard.yaml:4:10: models.m.pod: 'local' is this machine, not a pod; leave 'pod' "
                 "out to run here");
}

/* hosts: an ordered preference; pod: NAME is hosts: [NAME]; not both. */
static void test_hosts(void **state)
{
    (void)state;
    struct config *c = parse_ok("models:\n"
                                "  a: { cmd: x, hosts: [ box1, local, box2 ] }\n"
                                "  b: { cmd: x, pod: box1 }\n"
                                "  c: { cmd: x }\n"
                                "  d: { cmd: x, hosts: [ local, box1 ] }\n");
    const struct config_model *a = config_find_model(c, "a");
    assert_int_equal(a->n_hosts, 3);
    assert_string_equal(a->hosts[0], "box1");
    assert_string_equal(a->hosts[2], "box2");
    assert_string_equal(a->pod, "box1");
    assert_int_equal(config_model_host_rank(a, "local"), 1);
    assert_int_equal(config_model_host_rank(a, "box3"), -1);
    const struct config_model *b = config_find_model(c, "b");
    assert_int_equal(b->n_hosts, 1);
    assert_string_equal(b->hosts[0], "box1");
    assert_int_equal(config_model_host_rank(b, "local"), -1);
    const struct config_model *m = config_find_model(c, "c");
    assert_int_equal(m->n_hosts, 0);
    assert_int_equal(config_model_host_rank(m, "local"), 0);
    assert_int_equal(config_model_host_rank(m, NULL), 0);
    assert_null(config_find_model(c, "d")->pod);
    config_free(c);

    expect_error("models:\n  m:\n    cmd: x\n    pod: box1\n    hosts: [ box1 ]\n",
                 "yard.yaml:5:12: models.m.hosts: give 'pod' or 'hosts', not both; 'pod: NAME' is "
                 "'hosts: [NAME]', so put the pod in the hosts list and remove 'pod'");
    expect_error("models:\n  m:\n    cmd: x\n    hosts: [ local, box1, local ]\n",
                 "yard.yaml:4:27: models.m.hosts: host 'local' is listed twice; name each host "
                 "once");
    expect_error("models:\n  m:\n    cmd: x\n    hosts: []\n",
                 "yard.yaml:4:12: models.m.hosts: the list is empty; name at least one host "
                 "(local or a pod)");
}

static void test_eviction_policies(void **state)
{
    (void)state;
    expect_error("models:\n  a:\n    engine: llamacpp\n    cmd: x --port 7001\n"
                 "    eviction: { weights: offload }\n",
                 "yard.yaml:5:26: models.a.eviction: engine 'llamacpp' cannot release GPU memory "
                 "while running; use process 'cuda_suspend', 'checkpoint' or 'stop'");
    expect_error("models:\n  a:\n    engine: vllm\n    cmd: x --port 7000\n"
                 "    eviction: { weights: retain, process: keep_running }\n",
                 "yard.yaml:5:26: models.a.eviction: weights 'retain' with process 'keep_running' "
                 "frees no GPU memory; use weights 'offload' or 'discard', or process "
                 "'cuda_suspend' or 'stop'");
    struct config_errors errs = {0};
    const char *ok = "models:\n  a:\n    engine: vllm\n    cmd: x --port 7000\n"
                     "    eviction: { weights: discard }\n"
                     "  b:\n    engine: llamacpp\n    cmd: x --port 7001\n"
                     "    eviction: { process: cuda_suspend }\n"
                     "tools: { criu: /opt/criu, keep_checkpoints: true }\ngpu_ledger: /tmp/l\n";
    struct config *cfg = config_parse(ok, strlen(ok), "t.yaml", &errs);
    assert_non_null(cfg);
    assert_int_equal(cfg->models[0].evict_weights, CONFIG_WEIGHTS_DISCARD);
    assert_int_equal(cfg->models[0].evict_process, CONFIG_PROCESS_KEEP_RUNNING);
    assert_int_equal(cfg->models[1].evict_process, CONFIG_PROCESS_CUDA_SUSPEND);
    assert_string_equal(cfg->tool_criu, "/opt/criu");
    assert_string_equal(cfg->tool_cuda_checkpoint, "cuda-checkpoint");
    assert_int_equal(cfg->keep_checkpoints, 1);
    assert_string_equal(cfg->gpu_ledger, "/tmp/l");
    config_free(cfg);
}

/* tools.checkpoint_store: url, bucket, prefix, keep, part_size; one line per mistake */
static void test_checkpoint_store(void **state)
{
    (void)state;
    struct config *c = parse_ok("tools:\n  checkpoint_store: { url: \"https://s3.example.org/\", "
                                "bucket: yard, prefix: ckpt/, keep: 3 }\n");
    assert_non_null(c->ckpt_store);
    assert_string_equal(c->ckpt_store->url, "https://s3.example.org");
    assert_string_equal(c->ckpt_store->bucket, "yard");
    assert_string_equal(c->ckpt_store->prefix, "ckpt/");
    assert_int_equal(c->ckpt_store->keep, 3);
    assert_int_equal(c->ckpt_store->part_size, 16u << 20);
    config_free(c);
    c = parse_ok("tools: { checkpoint_store: { url: \"http://127.0.0.1:9000\", bucket: b.1-x, "
                 "part_size: 8MiB } }\n");
    assert_string_equal(c->ckpt_store->prefix, "");
    assert_int_equal(c->ckpt_store->keep, 2);
    assert_int_equal(c->ckpt_store->part_size, 8u << 20);
    config_free(c);
    c = parse_ok("tools: { criu: /opt/criu }\n");
    assert_null(c->ckpt_store);
    config_free(c);

    expect_error("tools: { checkpoint_store: { bucket: yard } }\n",
                 "yard.yaml:1:28: tools.checkpoint_store: give url and bucket, as { url: "
                 "\"https://s3.example.org\", bucket: yard, prefix: ckpt/ }");
    expect_error("tools: { checkpoint_store: { url: \"s3.example.org\", bucket: yard } }\n",
                 "yard.yaml:1:35: tools.checkpoint_store.url: 's3.example.org' is not an http:// "
                 "or https:// URL of the store's endpoint (no query); as "
                 "\"https://s3.example.org\"");
    expect_error("tools: { checkpoint_store: { url: \"https://h\", bucket: Yard_1 } }\n",
                 "yard.yaml:1:56: tools.checkpoint_store.bucket: 'Yard_1' is not a bucket name "
                 "(3-63 of a-z, 0-9, '.' and '-', starting and ending with a letter or digit)");
    expect_error("tools: { checkpoint_store: { url: \"https://h\", bucket: yard, prefix: ckpt } "
                 "}\n",
                 "yard.yaml:1:70: tools.checkpoint_store.prefix: 'ckpt' must be empty or a folder "
                 "such as 'ckpt/' (A-Z a-z 0-9 . _ - /, ending with '/', not starting with it)");
    expect_error("tools: { checkpoint_store: { url: \"https://h\", bucket: yard, keep: 0 } }\n",
                 "yard.yaml:1:68: tools.checkpoint_store.keep: 0 is out of range; use 1 to 1000");
    expect_error("tools: { checkpoint_store: { url: \"https://h\", bucket: yard, part_size: 1MiB "
                 "} }\n",
                 "yard.yaml:1:73: tools.checkpoint_store.part_size: give 5MiB to 5GiB (S3's "
                 "limits for a part)");
}

/* pods: { NAME: { setup | setup_file } } */
static void test_pods(void **state)
{
    struct config *c = parse_ok("pods:\n"
                                "  gpu-box-1:\n"
                                "    setup: |\n"
                                "      apt-get update\n"
                                "      echo \"it's $(date)\"\n"
                                "  other.pod_2: {}\n");
    assert_int_equal(c->n_pods, 2);
    const struct config_pod *p = config_find_pod(c, "gpu-box-1");
    assert_non_null(p);
    assert_string_equal(p->setup, "apt-get update\necho \"it's $(date)\"\n");
    assert_null(p->setup_file);
    assert_int_equal(p->line, 2);
    p = config_find_pod(c, "other.pod_2");
    assert_non_null(p);
    assert_null(p->setup);
    assert_null(p->setup_file);
    assert_null(config_find_pod(c, "nope"));
    config_free(c);

    /* setup_file: relative to the config's directory, and it must be readable */
    char dir[] = "/tmp/yard-config-pods-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *script = NULL, *cfg_path = NULL, *want = NULL;
    assert_true(asprintf(&script, "%s/setup.sh", dir) > 0);
    assert_true(asprintf(&cfg_path, "%s/yard.yaml", dir) > 0);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fputs("echo hi\n", f);
    fclose(f);
    const char *text =
        "pods:\n  g1:\n    setup_file: setup.sh\n  g2:\n    setup_file: /x/none.sh\n";
    struct config_errors e = {0};
    assert_null(config_parse(text, strlen(text), cfg_path, &e));
    assert_int_equal(e.n, 1);
    assert_true(asprintf(&want,
                         "%s:5:17: pods.g2.setup_file: cannot read '/x/none.sh': no such file or "
                         "directory; paths are relative to the config's directory",
                         cfg_path) > 0);
    assert_string_equal(e.msgs[0], want);
    config_errors_release(&e);
    text = "pods:\n  g1:\n    setup_file: setup.sh\n";
    c = config_parse(text, strlen(text), cfg_path, &e);
    assert_non_null(c);
    assert_string_equal(config_find_pod(c, "g1")->setup_file, script);
    assert_null(config_find_pod(c, "g1")->setup);
    config_free(c);
    unlink(script);
    rmdir(dir);
    free(script);
    free(cfg_path);
    free(want);

    expect_error("pods:\n  g:\n    setup: a\n    setup_file: b\n",
                 "yard.yaml:4:17: pods.g: give either 'setup' (the script) or 'setup_file' (its "
                 "path), not both");
    expect_error("pods:\n  ../x:\n    setup: a\n",
                 "yard.yaml:2:3: pods: invalid pod name '../x'; use 1 to 64 letters, digits, '.', "
                 "'_' or '-', not starting with '.'");
    expect_error("pods:\n  .h:\n    setup: a\n",
                 "yard.yaml:2:3: pods: invalid pod name '.h'; use 1 to 64 letters, digits, '.', "
                 "'_' or '-', not starting with '.'");
    expect_error("pods:\n  g:\n    setup: \"\"\n",
                 "yard.yaml:3:12: pods.g.setup: empty script; write the commands or leave the key "
                 "out");
    expect_error("pods:\n  g:\n    setupp: x\n",
                 "yard.yaml:3:5: unknown key 'setupp' in pod 'g'; did you mean 'setup'?");
    expect_error("pods: [a]\n", "yard.yaml:1:7: pods: expected a mapping of pod names, got a list");
    expect_error("pods:\n  g:\n    setup: [x]\n",
                 "yard.yaml:3:12: pods.g.setup: expected a string, got a list");
}

/* ---- keys, names and bytes ------------------------------------------ */

/* An empty api_keys would read as "auth on" and mean "auth off". */
static void test_empty_api_keys(void **state)
{
    expect_error("api_keys: []\n",
                 "yard.yaml:1:11: api_keys: an empty list would turn authentication off; list "
                 "at least one key, or leave 'api_keys' out to run without keys");
    expect_error("api_keys:\nlisten: 127.0.0.1:8080\n",
                 "yard.yaml:1:10: api_keys: a key with no value would turn authentication off; "
                 "list at least one key, or leave 'api_keys' out to run without keys");
    expect_error("api_keys: [\"\"]\n", "yard.yaml:1:12: api_keys: empty string in the list");
    struct config *c = parse_ok("listen: 127.0.0.1:8080\n");
    assert_int_equal(c->n_api_keys, 0);
    config_free(c);
}

/* ui: on by default; admin_keys: the same rules as api_keys. */
static void test_ui_and_admin_keys(void **state)
{
    struct config *c = parse_ok("listen: 127.0.0.1:8080\n");
    assert_int_equal(c->ui, 1);
    assert_int_equal(c->n_admin_keys, 0);
    config_free(c);
    c = parse_ok("ui: false\nadmin_keys: [ad-one, ad-two]\n");
    assert_int_equal(c->ui, 0);
    assert_int_equal(c->n_admin_keys, 2);
    assert_string_equal(c->admin_keys[1], "ad-two");
    config_free(c);
    expect_error("admin_keys: []\n",
                 "yard.yaml:1:13: admin_keys: an empty list would turn authentication off; list "
                 "at least one key, or leave 'admin_keys' out to run without keys");
    expect_error("admin_keys: sk\n", "yard.yaml:1:13: admin_keys: expected a list, got 'sk'");
    expect_error("ui: maybe\n", "yard.yaml:1:5: ui: expected true or false, got 'maybe'");
}

#define NAME_RULE_MSG                                                                              \
    "use 1 to 128 letters, digits, '.', '_', '-', ':', '@', '+' or '~', not starting with '.' "    \
    "or '-'"

/* Fills buf with n copies of c and a NUL; returns buf. */
static const char *repeat(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

/* Names become file names, URL segments, labels and argv words: bounded and plain. */
static void test_name_bounds(void **state)
{
    char yaml[4096], want[4096], want2[4096], r1[512], r2[512];
    /* 128 bytes is the most a name may have. */
    snprintf(yaml, sizeof yaml, "models:\n  %s:\n    cmd: x\n    aliases: [qwen2.5:7b, a@b+c~d]\n",
             repeat(r1, 'm', 128));
    struct config *c = parse_ok(yaml);
    assert_int_equal(strlen(c->models[0].name), 128);
    assert_ptr_equal(config_find_model(c, "qwen2.5:7b"), &c->models[0]);
    config_free(c);

    /* 300 bytes passed the check and then failed at start ("File name too long"). */
    snprintf(yaml, sizeof yaml, "models:\n  %s:\n    cmd: x\n", repeat(r1, 'm', 300));
    snprintf(want, sizeof want,
             "yard.yaml:2:3: models: model name '%s...' is 300 bytes long; " NAME_RULE_MSG,
             repeat(r2, 'm', 40));
    expect_error(yaml, want);

    /* The same bound on aliases and group names. */
    snprintf(yaml, sizeof yaml,
             "models:\n  a:\n    cmd: x\n    aliases: [%s]\ngroups:\n  %s: {members: [a]}\n",
             repeat(r1, 'b', 129), repeat(r2, 'g', 129));
    snprintf(want, sizeof want,
             "yard.yaml:4:15: models.a.aliases: alias '%s...' is 129 bytes long; " NAME_RULE_MSG,
             repeat(r1, 'b', 40));
    snprintf(want2, sizeof want2,
             "yard.yaml:6:3: groups: group name '%s...' is 129 bytes long; " NAME_RULE_MSG,
             repeat(r2, 'g', 40));
    const char *const w[] = {want, want2, NULL};
    expect_errors(yaml, w);

    /* Control characters are shown as '?', never echoed to a terminal. */
    expect_error("models:\n  \"a\\e[31mb\":\n    cmd: x\n",
                 "yard.yaml:2:3: models: invalid model name 'a?[31mb'; " NAME_RULE_MSG);
    expect_error("models:\n  ..:\n    cmd: x\n",
                 "yard.yaml:2:3: models: invalid model name '..'; " NAME_RULE_MSG);
    expect_error("models:\n  -x:\n    cmd: x\n",
                 "yard.yaml:2:3: models: invalid model name '-x'; " NAME_RULE_MSG);
    expect_error("models:\n  a:\n    cmd: x\n    aliases: [\"a b\", ok]\n",
                 "yard.yaml:4:15: models.a.aliases: invalid alias 'a b'; " NAME_RULE_MSG);
    expect_error("models:\n  a:\n    cmd: x\n    aliases: [\"%2e\"]\n",
                 "yard.yaml:4:15: models.a.aliases: invalid alias '%2e'; " NAME_RULE_MSG);
    /* A model's pod follows the pod name rule. */
    expect_error("models:\n  a:\n    cmd: x\n    pod: ../box\n",
                 "yard.yaml:4:10: models.a.pod: invalid pod name '../box'; use 1 to 64 letters, "
                 "digits, '.', '_' or '-', not starting with '.'");
}

/* A "\0" escape must not cut a name, key or value short without a word. */
static void test_nul_in_scalars(void **state)
{
    const char *const want[] = {
        "yard.yaml:1:12: a NUL byte (\\0) inside the string 'sk-one\\0...'; remove it",
        "yard.yaml:3:3: a NUL byte (\\0) inside the string 'a\\0...'; remove it",
        "yard.yaml:4:10: a NUL byte (\\0) inside the string 'serve\\0...'; remove it",
        "yard.yaml:5:15: a NUL byte (\\0) inside the string 'q\\0...'; remove it",
        "yard.yaml:6:11: a NUL byte (\\0) inside the string 'X\\0...'; remove it",
        "yard.yaml:6:19: a NUL byte (\\0) inside the string 'v\\0...'; remove it",
        NULL,
    };
    expect_errors("api_keys: [\"sk-one\\0sk-two\"]\n"
                  "models:\n"
                  "  \"a\\0b\":\n"
                  "    cmd: \"serve\\x00 --evil\"\n"
                  "    aliases: [\"q\\u0000r\"]\n"
                  "    env: {\"X\\0Y\": \"v\\0w\"}\n",
                  want);
    /* Two keys that differ after a NUL are two NUL errors, not a duplicate. */
    const char *const want2[] = {
        "yard.yaml:2:3: a NUL byte (\\0) inside the string 'a\\0...'; remove it",
        "yard.yaml:4:3: a NUL byte (\\0) inside the string 'a\\0...'; remove it",
        NULL,
    };
    expect_errors("models:\n"
                  "  \"a\\0b\":\n"
                  "    cmd: x\n"
                  "  \"a\\0c\":\n"
                  "    cmd: x\n",
                  want2);
}

/*
 * Many models: the checks for duplicate names, aliases, ports and group
 * members are table lookups, so a large file loads (it took minutes when each
 * alias was compared with every name). Duplicates far apart are still found.
 */
/* replicas: N and scale_after: the defaults, the bounds, and a fixed port they cannot share. */
static void test_replicas(void **state)
{
    (void)state;
    struct config *c = parse_ok("models:\n"
                                "  a:\n"
                                "    cmd: x --port ${PORT}\n"
                                "  b:\n"
                                "    cmd: x --port ${PORT}\n"
                                "    replicas: 3\n"
                                "    scale_after: 500ms\n"
                                "  c:\n"
                                "    cmd: x\n"
                                "    port: 7001\n"
                                "    replicas: 1\n");
    assert_int_equal(c->models[0].replicas, 1);
    assert_int_equal(c->models[0].scale_after_ms, 2000);
    assert_int_equal(c->models[1].replicas, 3);
    assert_int_equal(c->models[1].scale_after_ms, 500);
    assert_int_equal(c->models[2].replicas, 1);
    config_free(c);
    c = parse_ok("models:\n  a:\n    cmd: x --port ${PORT}\n    replicas: 64\n");
    assert_int_equal(c->models[0].replicas, 64);
    config_free(c);

    const char *const want[] = {
        "yard.yaml:4:15: models.a.replicas: 0 is out of range; use 1 to 64",
        "yard.yaml:7:15: models.b.replicas: 65 is out of range; use 1 to 64",
        "yard.yaml:11:15: models.c.replicas: 2 replicas cannot share the fixed port 7001; remove "
        "'port:' (and a literal --port in cmd) so that yard gives each replica its own",
        NULL,
    };
    expect_errors("models:\n"
                  "  a:\n"
                  "    cmd: x --port ${PORT}\n"
                  "    replicas: 0\n"
                  "  b:\n"
                  "    cmd: x --port ${PORT}\n"
                  "    replicas: 65\n"
                  "  c:\n"
                  "    cmd: x\n"
                  "    port: 7001\n"
                  "    replicas: 2\n",
                  want);
}

/* config_name_from: what yard init makes of file names; each result is a name the loader takes. */
static void test_name_from(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"Llama-3.1-8B.Q4_K_M", "Llama-3.1-8B.Q4_K_M"},
        {"my model", "my-model"},
        {"my  model (1)", "my-model-1"},
        {"a - b", "a-b"},
        {"a--b", "a--b"},
        {"\xc3\xbc"
         "ber modell",
         "ber-modell"},
        {"x\xe6\x97\xa5\xe6\x9c\xac", "x"},
        {"..hidden", "hidden"},
        {"-rf", "rf"},
        {"dir/file", "dir-file"},
        {"qwen2.5:7b@q4+x~y", "qwen2.5:7b@q4+x~y"},
        {"${PORT} 'quoted'", "PORT-quoted"},
        {"\xe6\x97\xa5\xe6\x9c\xac", NULL},
        {"...", NULL},
        {"~", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = config_name_from(cases[i].in, strlen(cases[i].in));
        if (!cases[i].want) {
            assert_null(got);
            continue;
        }
        assert_non_null(got);
        assert_string_equal(got, cases[i].want);
        char *yaml = xstrfmt("models:\n  \"%s\": { cmd: \"true\" }\n", got);
        struct config_errors errs = {0};
        struct config *cfg = config_parse(yaml, strlen(yaml), "t.yaml", &errs);
        assert_non_null(cfg);
        config_free(cfg);
        free(yaml);
        free(got);
    }
    /* Cut to 128 bytes, and no trailing '-' where the cut falls after one. */
    char longname[300];
    memset(longname, 'a', sizeof longname);
    longname[127] = ' ';
    char *got = config_name_from(longname, sizeof longname);
    assert_int_equal(strlen(got), 127);
    free(got);
    memset(longname, 'b', sizeof longname);
    got = config_name_from(longname, sizeof longname);
    assert_int_equal(strlen(got), 128);
    free(got);
}

static void test_many_models(void **state)
{
    enum { N = 50000 };
    struct buf {
        char *p;
        size_t len, cap;
    } b = {0};
    b.cap = (size_t)N * 128 + 4096;
    b.p = malloc(b.cap);
    assert_non_null(b.p);
#define ADD(...) (b.len += (size_t)snprintf(b.p + b.len, b.cap - b.len, __VA_ARGS__))
    /* Groups first: their messages must still come before the models' ones. */
    ADD("groups:\n  all:\n    members: [m0");
    for (int i = 10; i < N; i += 10)
        ADD(", m%d", i);
    ADD(", x10, zz]\n");
    ADD("models:\n");
    for (int i = 0; i < N; i++)
        ADD("  m%d:\n    cmd: run %d\n    port: %d\n    aliases: [a%d, x%d]\n", i, i, 10000 + i, i,
            i);
    /* Clashes with the first models, found from the far end of the file. */
    ADD("  late:\n    cmd: run\n    port: 10000\n    aliases: [m1, a2]\n");
    ADD("  m3:\n    cmd: dup\n");
#undef ADD
    assert_true(b.len < b.cap);
    int line = 5 + 4 * N; /* the line of 'late' */
    int col = (int)(strstr(b.p, ", x10, zz]") - strchr(b.p + strlen("groups:\n"), '\n')) + 2;
    char w0[128], w1[128], w2[128], w3[128], w4[128], w5[128];
    snprintf(w0, sizeof w0,
             "yard.yaml:3:%d: groups.all.members: 'x10' is model 'm10', already listed", col);
    snprintf(w1, sizeof w1, "yard.yaml:3:%d: groups.all.members: unknown model 'zz'", col + 5);
    snprintf(w2, sizeof w2,
             "yard.yaml:%d:11: models.late.port: port 10000 is already used by model 'm0'",
             line + 2);
    snprintf(w3, sizeof w3,
             "yard.yaml:%d:15: models.late.aliases: alias 'm1' is the name of model 'm1'",
             line + 3);
    snprintf(w4, sizeof w4,
             "yard.yaml:%d:19: models.late.aliases: alias 'a2' is already an alias of model 'm2'",
             line + 3);
    snprintf(w5, sizeof w5,
             "yard.yaml:%d:3: duplicate key 'm3' in 'models' (first at line 17); remove one",
             line + 4);
    const char *const want[] = {w0, w1, w2, w3, w4, w5, NULL};
    expect_errors(b.p, want);

    /* Without the clashes it loads, and every name and alias resolves. */
    char *late = strstr(b.p, "  late:\n");
    *late = '\0';
    char *x10 = strstr(b.p, ", x10, zz]");
    memmove(x10, x10 + strlen(", x10, zz"), strlen(x10 + strlen(", x10, zz")) + 1);
    struct config *c = parse_ok(b.p);
    assert_int_equal(c->n_models, N);
    assert_int_equal(c->groups[0].n_members, N / 10);
    for (int i = 0; i < N; i += 997) {
        char name[32];
        snprintf(name, sizeof name, "x%d", i);
        assert_ptr_equal(config_find_model(c, name), &c->models[i]);
        snprintf(name, sizeof name, "m%d", i);
        assert_ptr_equal(config_find_model(c, name), &c->models[i]);
    }
    assert_null(config_find_model(c, "m"));
    config_free(c);
    free(b.p);
}

/* ---- clouds --------------------------------------------------------- */

/* A directory with a key pair (KEY and KEY.pub) for clouds' ssh_key; removed at the end. */
static char cloud_dir[] = "/tmp/yard-config-clouds-XXXXXX";
static char *cloud_key;

static void cloud_files(void)
{
    if (cloud_key)
        return;
    assert_non_null(mkdtemp(cloud_dir));
    assert_true(asprintf(&cloud_key, "%s/id_ed25519", cloud_dir) > 0);
    char *pub = NULL;
    assert_true(asprintf(&pub, "%s.pub", cloud_key) > 0);
    FILE *f = fopen(cloud_key, "w");
    assert_non_null(f);
    fputs("not a real key\n", f);
    fclose(f);
    f = fopen(pub, "w");
    assert_non_null(f);
    fputs("ssh-ed25519 AAAA test\n", f);
    fclose(f);
    free(pub);
}

static int cloud_files_remove(void **state)
{
    if (!cloud_key)
        return 0;
    char *pub = NULL;
    if (asprintf(&pub, "%s.pub", cloud_key) > 0)
        unlink(pub);
    unlink(cloud_key);
    rmdir(cloud_dir);
    free(pub);
    free(cloud_key);
    cloud_key = NULL;
    return 0;
}

/* "clouds:\n  vast:\n" with the required keys (lines 3 to 7), then extra, then tail. */
static char *cloud_yaml(const char *extra, const char *tail)
{
    cloud_files();
    char *y = NULL;
    assert_true(asprintf(&y,
                         "clouds:\n"
                         "  vast:\n"
                         "    provider: vast\n"
                         "    api_key: ${env.VAST_API_KEY}\n"
                         "    max_price: 1.5\n"
                         "    image: vllm/vllm-openai:latest\n"
                         "    ssh_key: %s\n"
                         "%s%s",
                         cloud_key, extra, tail) > 0);
    return y;
}

static void expect_cloud_error(const char *extra, const char *want)
{
    char *y = cloud_yaml(extra, "");
    expect_error(y, want);
    free(y);
}

static void test_clouds(void **state)
{
    /* Every key. */
    char *y = cloud_yaml("    url: http://127.0.0.1:4000/\n"
                         "    strictness: strict\n"
                         "    max_machines: 3\n"
                         "    max_tries: 7\n"
                         "    disk: 80GiB\n"
                         "    setup: pip install x\n"
                         "    filters:\n"
                         "      gpu_name: \"RTX 4090\"\n"
                         "      geolocation: [US, CA]\n"
                         "      reliability2: { gte: 0.99 }\n"
                         "      cuda_max_good: { gte: 12.8, lt: 13 }\n"
                         "      static_ip: true\n"
                         "      compute_cap: \"890\"\n"
                         "    idle_release: 45m\n"
                         "    release_on_exit: true\n"
                         "    deadlines: { running: 2m, ssh: 30s, setup: 10m, ready: 20m }\n"
                         "    bad_host_ttl: 2h\n",
                         "models:\n  m: { cmd: x, hosts: [local, vast] }\n");
    struct config *c = parse_ok(y);
    free(y);
    assert_int_equal(c->n_clouds, 1);
    const struct config_cloud *cl = config_find_cloud(c, "vast");
    assert_non_null(cl);
    assert_null(config_find_cloud(c, "nope"));
    assert_string_equal(cl->provider, "vast");
    assert_string_equal(cl->api_key, "${env.VAST_API_KEY}");
    assert_string_equal(cl->url, "http://127.0.0.1:4000");
    assert_int_equal(cl->strictness, CONFIG_STRICTNESS_STRICT);
    assert_string_equal(config_strictness_name(cl->strictness), "strict");
    assert_true(cl->max_price == 1.5);
    assert_int_equal(cl->max_machines, 3);
    assert_int_equal(cl->max_tries, 7);
    assert_string_equal(cl->image, "vllm/vllm-openai:latest");
    assert_true(cl->disk == 80ull << 30);
    assert_string_equal(cl->ssh_key, cloud_key);
    assert_string_equal(cl->setup, "pip install x");
    assert_true(cl->idle_release_ms == 45ull * 60 * 1000);
    assert_int_equal(cl->release_on_exit, 1);
    assert_true(cl->deadline_running_ms == 2ull * 60 * 1000);
    assert_true(cl->deadline_ssh_ms == 30ull * 1000);
    assert_true(cl->deadline_setup_ms == 10ull * 60 * 1000);
    assert_true(cl->bad_host_ttl_ms == 2ull * 3600 * 1000);
    assert_true(cl->deadline_ready_ms == 20ull * 60 * 1000);
    assert_int_equal(cl->line, 2);
    /* Filters in file order, one per op, typed as written. */
    assert_int_equal(cl->n_filters, 7);
    const struct config_cloud_filter *f = cl->filters;
    assert_string_equal(f[0].field, "gpu_name");
    assert_string_equal(f[0].op, "eq");
    assert_int_equal(f[0].values[0].type, CONFIG_VALUE_STRING);
    assert_string_equal(f[0].values[0].text, "RTX 4090");
    assert_string_equal(f[1].field, "geolocation");
    assert_string_equal(f[1].op, "in");
    assert_true(f[1].is_list);
    assert_int_equal(f[1].n_values, 2);
    assert_string_equal(f[1].values[1].text, "CA");
    assert_string_equal(f[2].op, "gte");
    assert_int_equal(f[2].values[0].type, CONFIG_VALUE_NUMBER);
    assert_true(f[2].values[0].number == 0.99);
    assert_string_equal(f[3].op, "gte");
    assert_string_equal(f[4].field, "cuda_max_good");
    assert_string_equal(f[4].op, "lt");
    assert_true(f[4].values[0].number == 13);
    assert_int_equal(f[5].values[0].type, CONFIG_VALUE_BOOL);
    assert_int_equal(f[5].values[0].boolean, 1);
    assert_int_equal(f[6].values[0].type, CONFIG_VALUE_STRING); /* quoted: text */
    assert_string_equal(config_find_model(c, "m")->hosts[1], "vast");

    /* A reload that changes a cloud says so; one that does not, does not. */
    y = cloud_yaml("    strictness: aggressive\n", "");
    struct config *c2 = parse_ok(y);
    free(y);
    char *applied, *restart;
    config_reload_changes(c, c2, &applied, &restart);
    assert_string_equal(applied, "clouds");
    free(applied);
    free(restart);
    config_reload_changes(c2, c2, &applied, &restart);
    assert_string_equal(applied, "");
    free(applied);
    free(restart);
    config_free(c2);
    config_free(c);

    /* Defaults. */
    y = cloud_yaml("", "");
    c = parse_ok(y);
    free(y);
    cl = &c->clouds[0];
    assert_string_equal(cl->url, "https://console.vast.ai");
    assert_int_equal(cl->strictness, CONFIG_STRICTNESS_BALANCED);
    assert_int_equal(cl->max_machines, 1);
    assert_int_equal(cl->max_tries, 5);
    assert_true(cl->disk == 60ull << 30);
    assert_null(cl->setup);
    assert_int_equal(cl->n_filters, 0);
    assert_true(cl->idle_release_ms == 30ull * 60 * 1000);
    assert_int_equal(cl->release_on_exit, 0);
    assert_true(cl->deadline_running_ms == 15ull * 60 * 1000);
    assert_true(cl->deadline_ssh_ms == 5ull * 60 * 1000);
    assert_true(cl->deadline_setup_ms == 60ull * 60 * 1000);
    assert_true(cl->bad_host_ttl_ms == 7ull * 24 * 3600 * 1000);
    assert_true(cl->deadline_ready_ms == 0);
    config_free(c);

    /* A deadline changed is a cloud changed. */
    y = cloud_yaml("    deadlines: { ssh: 1m }\n", "");
    c2 = parse_ok(y);
    free(y);
    y = cloud_yaml("", "");
    c = parse_ok(y);
    free(y);
    config_reload_changes(c, c2, &applied, &restart);
    assert_string_equal(applied, "clouds");
    free(applied);
    free(restart);
    config_free(c2);
    config_free(c);

    /* never: bad-host entries do not expire */
    y = cloud_yaml("    bad_host_ttl: never\n", "");
    c = parse_ok(y);
    free(y);
    assert_true(config_find_cloud(c, "vast")->bad_host_ttl_ms == 0);
    config_free(c);

    /* ~ is $HOME's. */
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("HOME", cloud_dir, 1);
    const char *t = "clouds:\n  v: { provider: vast, api_key: k, max_price: 1, image: i, "
                    "ssh_key: ~/id_ed25519 }\n";
    c = parse_ok(t);
    assert_string_equal(c->clouds[0].ssh_key, cloud_key);
    config_free(c);
    if (home)
        setenv("HOME", home, 1);
    free(home);
}

static void test_cloud_errors(void **state)
{
    /* What a cloud must say, each missing key named with an example. */
    const char *const missing[] = {
        "yard.yaml:2:3: clouds.v: missing 'provider'; give the marketplace, as 'provider: vast'",
        "yard.yaml:2:3: clouds.v: missing 'api_key'; give the marketplace's key, as 'api_key: "
        "${env.VAST_API_KEY}'",
        "yard.yaml:2:3: clouds.v: missing 'max_price'; give the most yard may pay per machine, "
        "in $/hour, as 'max_price: 1.50'",
        "yard.yaml:2:3: clouds.v: missing 'image'; give the container image machines run, as "
        "'image: vllm/vllm-openai:latest'",
        "yard.yaml:2:3: clouds.v: missing 'ssh_key'; give the private key yard logs in to "
        "machines with, as 'ssh_key: ~/.ssh/id_ed25519' (its .pub goes to the machine)",
        NULL,
    };
    expect_errors("clouds:\n  v: {}\n", missing);

    /* Names: the pod rule, not local, not a pod. */
    char *y = cloud_yaml("", "pods:\n  vast: { setup: x }\n");
    expect_error(y, "yard.yaml:2:3: clouds: 'vast' is also a pod (pods.vast at line 9); a host "
                    "name is one pod or one cloud, so name the cloud differently");
    free(y);
    expect_error("clouds:\n  local: {}\n", "yard.yaml:2:3: clouds: 'local' is reserved for this "
                                           "machine; name the cloud differently");
    expect_error("clouds:\n  a/b: {}\n",
                 "yard.yaml:2:3: clouds: invalid cloud name 'a/b'; use 1 to 64 letters, digits, "
                 "'.', '_' or '-', not starting with '.'");
    expect_error("clouds: [vast]\n", "yard.yaml:1:9: clouds: expected a mapping of cloud names, "
                                     "got a list");

    /* Keys and values. */
    expect_cloud_error("    max_prize: 2\n", "yard.yaml:8:5: unknown key 'max_prize' in cloud "
                                             "'vast'; did you mean 'max_price'?");
    expect_cloud_error("    strictness: paranoid\n",
                       "yard.yaml:8:17: clouds.vast.strictness: unknown strictness 'paranoid'; "
                       "use strict, balanced or aggressive");
    expect_cloud_error("    url: http://api.example.org\n",
                       "yard.yaml:8:10: clouds.vast.url: 'http://' would send the API key "
                       "unencrypted; use https:// (plain http is taken for a loopback address "
                       "only, as a test stand-in's)");
    expect_cloud_error("    url: console.vast.ai\n",
                       "yard.yaml:8:10: clouds.vast.url: 'console.vast.ai' is not an API "
                       "address; give its base URL, as 'https://console.vast.ai'");
    expect_cloud_error("    max_machines: 0\n",
                       "yard.yaml:8:19: clouds.vast.max_machines: 0 is out of range; use 1 to "
                       "1000");
    expect_cloud_error("    disk: 10MiB\n", "yard.yaml:8:11: clouds.vast.disk: '10MiB' is out of "
                                            "range; use 1GiB to 64TiB");
    expect_cloud_error("    idle_release: 10ms\n",
                       "yard.yaml:8:19: clouds.vast.idle_release: '10ms' is too short; use at "
                       "least 1s, as '30m'");
    expect_cloud_error("    deadlines: { runing: 1m }\n",
                       "yard.yaml:8:18: unknown key 'runing' in 'clouds.vast.deadlines'; did you "
                       "mean 'running'?");
    expect_cloud_error("    deadlines: { boot: 1m }\n",
                       "yard.yaml:8:18: unknown key 'boot' in 'clouds.vast.deadlines'; valid keys: "
                       "running, ssh, setup, ready");
    expect_cloud_error("    deadlines: { ssh: soon }\n",
                       "yard.yaml:8:23: clouds.vast.deadlines.ssh: invalid duration 'soon'; use a "
                       "number and a unit, as '500ms', '30s', '10m' or '2h'");
    expect_cloud_error("    deadlines: { setup: 200ms }\n",
                       "yard.yaml:8:25: clouds.vast.deadlines.setup: '200ms' is too short; use at "
                       "least 1s, as '1h'");
    expect_cloud_error("    deadlines: 15m\n",
                       "yard.yaml:8:16: clouds.vast.deadlines: expected a mapping of steps, as { "
                       "running: 15m, ssh: 5m }, got '15m'");
    expect_cloud_error("    bad_host_ttl: 500ms\n",
                       "yard.yaml:8:19: clouds.vast.bad_host_ttl: '500ms' is too short; use at "
                       "least 1s, as '7d', or 'never' to keep bad hosts until 'yard cloud bad "
                       "--forget'");
    expect_cloud_error("    bad_host_ttl: 0\n",
                       "yard.yaml:8:19: clouds.vast.bad_host_ttl: '0' is too short; use at "
                       "least 1s, as '7d', or 'never' to keep bad hosts until 'yard cloud bad "
                       "--forget'");
    expect_cloud_error("    bad_host_ttl: soon\n",
                       "yard.yaml:8:19: clouds.vast.bad_host_ttl: invalid duration 'soon'; use a "
                       "number and a unit, as '500ms', '30s', '10m' or '2h'");
    expect_cloud_error("    bad_host_ttl: [1d]\n",
                       "yard.yaml:8:19: clouds.vast.bad_host_ttl: expected a string, got a list");
    expect_cloud_error("    deadlines: { ready: 0s }\n",
                       "yard.yaml:8:25: clouds.vast.deadlines.ready: '0s' is too short; use at "
                       "least 1s, as '30m'");
    expect_cloud_error("    release_on_exit: maybe\n",
                       "yard.yaml:8:22: clouds.vast.release_on_exit: expected true or false, got "
                       "'maybe'");

    const char *const values[] = {
        "yard.yaml:3:15: clouds.v.provider: unknown provider 'aws'; use vast",
        "yard.yaml:4:14: clouds.v.api_key: '${VAST_KEY}' is not a macro this key takes; write "
        "${env.VAR} to read the key from the daemon's environment",
        "yard.yaml:5:16: clouds.v.max_price: 0 is out of range; give $/hour, more than 0 and at "
        "most 1000",
        "yard.yaml:6:12: clouds.v.image: 'a b' is not an image name; give one as "
        "'vllm/vllm-openai:latest'",
        "yard.yaml:7:14: clouds.v.ssh_key: cannot read '/nonexistent/key': no such file or "
        "directory; give the private key yard logs in with (make one with ssh-keygen -t ed25519 "
        "-f PATH)",
        NULL,
    };
    expect_errors("clouds:\n  v:\n    provider: aws\n    api_key: ${VAST_KEY}\n"
                  "    max_price: 0\n    image: a b\n    ssh_key: /nonexistent/key\n",
                  values);
    cloud_files();
    char *y2 = NULL;
    assert_true(asprintf(&y2,
                         "clouds:\n  v:\n    provider: vast\n    api_key: k\n"
                         "    max_price: 2000\n    image: i\n    ssh_key: %s\n",
                         cloud_key) > 0);
    expect_error(y2, "yard.yaml:5:16: clouds.v.max_price: 2000 is out of range; give $/hour, "
                     "more than 0 and at most 1000");
    free(y2);

    /* A private key without its .pub. */
    cloud_files();
    char *pub = NULL, *want = NULL;
    assert_true(asprintf(&pub, "%s.pub", cloud_key) > 0);
    assert_int_equal(rename(pub, "/tmp/yard-config-clouds-pub-aside"), 0);
    y = cloud_yaml("", "");
    assert_true(asprintf(&want,
                         "yard.yaml:7:14: clouds.vast.ssh_key: cannot read '%s': no such file or "
                         "directory; the public key goes to the machine; write it with ssh-keygen "
                         "-y -f KEY > KEY.pub",
                         pub) > 0);
    expect_error(y, want);
    assert_int_equal(rename("/tmp/yard-config-clouds-pub-aside", pub), 0);
    free(y);
    free(want);
    free(pub);

    /* Filters. */
    expect_cloud_error("    filters: { num_gpus: 2 }\n",
                       "yard.yaml:8:16: clouds.vast.filters.num_gpus: yard sets it from the "
                       "model's 'gpus' and 'vram' (or 'yard cloud offers --gpus --vram'); remove "
                       "it here");
    expect_cloud_error("    filters: { dph_total: { lte: 1 } }\n",
                       "yard.yaml:8:16: clouds.vast.filters.dph_total: the price limit is "
                       "'max_price'; remove it here");
    expect_cloud_error("    filters: { machine_id: [1] }\n",
                       "yard.yaml:8:16: clouds.vast.filters.machine_id: yard excludes machines "
                       "itself (its bad-host list); remove it here");
    expect_cloud_error("    filters: { allocated_storage: 5 }\n",
                       "yard.yaml:8:16: clouds.vast.filters.allocated_storage: it is not a "
                       "filter of offers; yard sets it (allocated_storage from 'disk')");
    expect_cloud_error("    filters: { gpu_name: RTX_4090 }\n",
                       "yard.yaml:8:26: clouds.vast.filters.gpu_name: 'RTX_4090' has '_' where "
                       "the marketplace's GPU names have spaces; write it as the offers show it, "
                       "as 'RTX 4090'");
    expect_cloud_error("    filters: { geolocation: [US, Oregon] }\n",
                       "yard.yaml:8:34: clouds.vast.filters.geolocation: 'Oregon' is not a "
                       "country; geolocation filters take two-letter country codes, as US or DE");
    expect_cloud_error("    filters: { inet_down: { above: 100 } }\n",
                       "yard.yaml:8:29: unknown key 'above' in 'clouds.vast.filters.inet_down'; "
                       "valid keys: eq, neq, gt, gte, lt, lte, in, notin");
    expect_cloud_error("    filters: { inet_down: { in: 100 } }\n",
                       "yard.yaml:8:33: clouds.vast.filters.inet_down.in: expected a list, got "
                       "'100'");
    expect_cloud_error("    filters: { inet_down: { gte: [1, 2] } }\n",
                       "yard.yaml:8:34: clouds.vast.filters.inet_down.gte: expected one value, "
                       "got a list");
    expect_cloud_error("    filters: { inet_down: {} }\n",
                       "yard.yaml:8:27: clouds.vast.filters.inet_down: no operator; give one of "
                       "eq, neq, gt, gte, lt, lte, in or notin");
    expect_cloud_error("    filters: { Bad-Field: 1 }\n",
                       "yard.yaml:8:16: clouds.vast.filters: 'Bad-Field' is not an offer field; "
                       "fields are lowercase words with '_', as gpu_name or reliability2");
    expect_cloud_error("    filters: [gpu_name]\n",
                       "yard.yaml:8:14: clouds.vast.filters: expected a mapping of offer fields, "
                       "as { gpu_name: \"RTX 4090\" }, got a list");
}

static void test_cloud_api_key(void **state)
{
    struct config_cloud c = {.name = "vast", .api_key = "${env.YARD_TEST_VAST_KEY}"};
    char err[256];
    unsetenv("YARD_TEST_VAST_KEY");
    assert_null(config_cloud_api_key(&c, err, sizeof err));
    assert_string_equal(err, "environment variable 'YARD_TEST_VAST_KEY' is not set (used in "
                             "clouds.vast.api_key); set it in the daemon's environment and "
                             "restart it");
    setenv("YARD_TEST_VAST_KEY", "", 1);
    assert_null(config_cloud_api_key(&c, err, sizeof err));
    assert_string_equal(err, "environment variable 'YARD_TEST_VAST_KEY' is empty (used in "
                             "clouds.vast.api_key); set it in the daemon's environment and "
                             "restart it");
    setenv("YARD_TEST_VAST_KEY", "abc123", 1);
    char *k = config_cloud_api_key(&c, err, sizeof err);
    assert_string_equal(k, "abc123");
    free(k);
    c.api_key = "pre-${env.YARD_TEST_VAST_KEY}-post";
    k = config_cloud_api_key(&c, err, sizeof err);
    assert_string_equal(k, "pre-abc123-post");
    free(k);
    c.api_key = "literal-key";
    k = config_cloud_api_key(&c, err, sizeof err);
    assert_string_equal(k, "literal-key");
    free(k);
    unsetenv("YARD_TEST_VAST_KEY");
}

/* ---- sessions ------------------------------------------------------- */

static void test_sessions_defaults(void **state)
{
    (void)state;
    struct config *c = parse_ok("models: { a: { cmd: x } }\n");
    assert_int_equal(c->sessions.enabled, 0);
    config_free(c);

    /* the key alone turns the pool on with every default */
    c = parse_ok("sessions:\n");
    const struct config_sessions *s = &c->sessions;
    assert_int_equal(s->enabled, 1);
    assert_null(s->root);
    assert_int_equal(s->max_sessions, 32);
    assert_int_equal(s->idle_after_ms, 15 * 60 * 1000);
    assert_int_equal(s->idle_action, CONFIG_IDLE_STOP);
    assert_int_equal(s->backup_after_ms, 0);
    assert_null(s->backup_dir);
    assert_int_equal(s->prune_after_ms, 24ull * 3600 * 1000);
    assert_int_equal(s->n_shell, 2);
    assert_string_equal(s->shell[0], "/bin/sh");
    assert_string_equal(s->shell[1], "-c");
    assert_int_equal(s->n_env, 0);
    assert_null(s->bootstrap);
    assert_null(s->nix_profile);
    assert_int_equal(s->isolation, CONFIG_ISOLATION_BWRAP);
    assert_int_equal(s->network, 0);
    assert_int_equal(s->limit_memory, 0);
    assert_int_equal(s->limit_pids, 0);
    assert_true(s->limit_cpu == 0);
    assert_null(s->user);
    assert_string_equal(config_isolation_name(s->isolation), "bwrap");
    assert_string_equal(config_idle_action_name(CONFIG_IDLE_PAUSE), "pause");
    config_free(c);
}

static void test_sessions_full(void **state)
{
    (void)state;
    struct config_errors e = {0};
    const char *yaml = "sessions:\n"
                       "  root: vols\n"
                       "  max_sessions: 4\n"
                       "  idle: { after: 30s, action: pause }\n"
                       "  backup_after: 1h\n"
                       "  backup_dir: /var/backups/yard\n"
                       "  prune_after: 2h\n"
                       "  shell: [ /bin/bash, -lc ]\n"
                       "  env: { LANG: C.UTF-8, X_1: 'a b' }\n"
                       "  bootstrap: git init\n"
                       "  nix_profile: /nix/var/nix/profiles/agent\n"
                       "  isolation: bwrap\n"
                       "  network: true\n"
                       "  limits: { memory: 2GiB, pids: 512, cpu: 1.5 }\n"
                       "  user: nobody\n";
    struct config *c = config_parse(yaml, strlen(yaml), "/etc/yard/yard.yaml", &e);
    assert_int_equal(e.n, 0);
    assert_non_null(c);
    const struct config_sessions *s = &c->sessions;
    assert_int_equal(s->enabled, 1);
    assert_string_equal(s->root, "/etc/yard/vols");
    assert_int_equal(s->max_sessions, 4);
    assert_int_equal(s->idle_after_ms, 30000);
    assert_int_equal(s->idle_action, CONFIG_IDLE_PAUSE);
    assert_int_equal(s->backup_after_ms, 3600 * 1000);
    assert_string_equal(s->backup_dir, "/var/backups/yard");
    assert_int_equal(s->prune_after_ms, 2 * 3600 * 1000);
    assert_int_equal(s->n_shell, 2);
    assert_string_equal(s->shell[0], "/bin/bash");
    assert_string_equal(s->shell[1], "-lc");
    assert_int_equal(s->n_env, 2);
    assert_string_equal(s->env[0].key, "LANG");
    assert_string_equal(s->env[0].value, "C.UTF-8");
    assert_string_equal(s->env[1].key, "X_1");
    assert_string_equal(s->env[1].value, "a b");
    assert_string_equal(s->bootstrap, "git init");
    assert_string_equal(s->nix_profile, "/nix/var/nix/profiles/agent");
    assert_int_equal(s->network, 1);
    assert_int_equal(s->limit_memory, 2ull << 30);
    assert_int_equal(s->limit_pids, 512);
    assert_true(s->limit_cpu == 1.5);
    assert_string_equal(s->user, "nobody");
    config_free(c);

    /* 0 turns idling and pruning off; isolation none without network or user is fine */
    c = parse_ok("sessions: { idle: { after: 0 }, prune_after: 0, isolation: none }\n");
    assert_int_equal(c->sessions.idle_after_ms, 0);
    assert_int_equal(c->sessions.prune_after_ms, 0);
    assert_int_equal(c->sessions.isolation, CONFIG_ISOLATION_NONE);
    config_free(c);
}

static void test_sessions_errors(void **state)
{
    (void)state;
    expect_error("sessions: { rot: /x }\n",
                 "yard.yaml:1:13: unknown key 'rot' in 'sessions'; did you mean 'root'?");
    expect_error("sessions: [ a ]\n", "yard.yaml:1:11: sessions: expected a mapping, got a list");
    expect_error("sessions: { max_sessions: 0 }\n",
                 "yard.yaml:1:27: sessions.max_sessions: 0 is out of range; use 1 to 100000");
    expect_error("sessions: { idle: { after: 10ms } }\n",
                 "yard.yaml:1:28: sessions.idle.after: '10ms' is too short; use at least 1s, or "
                 "0 to keep sessions active");
    expect_error("sessions: { idle: { action: kill } }\n",
                 "yard.yaml:1:29: sessions.idle.action: unknown action 'kill'; use stop or pause");
    expect_error("sessions: { backup_after: 1h }\n",
                 "yard.yaml:1:27: sessions.backup_after: backups need 'backup_dir', the directory "
                 "they are written to; add it or leave backup_after out");
    expect_error("sessions: { backup_dir: /b }\n",
                 "yard.yaml:1:25: sessions.backup_dir: nothing is backed up without "
                 "'backup_after'; add it (as '1h') or leave backup_dir out");
    expect_error("sessions: { backup_after: 2h, backup_dir: /b, prune_after: 1h }\n",
                 "yard.yaml:1:60: sessions.prune_after: a volume would be deleted before its "
                 "backup; make prune_after longer than backup_after");
    expect_error("sessions: { backup_after: 2d, backup_dir: /b }\n",
                 "yard.yaml:1:11: sessions.prune_after: a volume would be deleted before its "
                 "backup; make prune_after longer than backup_after");
    expect_error("sessions: { prune_after: 5ms }\n",
                 "yard.yaml:1:26: sessions.prune_after: '5ms' is too short; use at least 1s, as "
                 "'1h', or 0 for never");
    expect_error("sessions: { shell: [] }\n",
                 "yard.yaml:1:20: sessions.shell: an empty list; give the shell's absolute path "
                 "and its options, as [/bin/bash, -lc]");
    expect_error("sessions: { shell: [ bash, -c ] }\n",
                 "yard.yaml:1:20: sessions.shell: the program is not an absolute path; give the "
                 "shell's absolute path and its options, as [/bin/bash, -lc]");
    expect_error("sessions: { shell: /bin/sh }\n",
                 "yard.yaml:1:20: sessions.shell: expected a list such as [/bin/bash, -lc], got "
                 "'/bin/sh'");
    expect_error("sessions: { env: { 1X: a } }\n",
                 "yard.yaml:1:20: sessions.env: invalid environment variable name '1X'");
    expect_error("sessions: { bootstrap: '' }\n",
                 "yard.yaml:1:24: sessions.bootstrap: empty; give the command to run in a new "
                 "volume or leave the key out");
    expect_error("sessions: { root: '' }\n",
                 "yard.yaml:1:19: sessions.root: empty path; give a directory or leave the key "
                 "out");
    expect_error("sessions: { isolation: docker }\n",
                 "yard.yaml:1:24: sessions.isolation: unknown isolation 'docker'; use bwrap or "
                 "none");
    expect_error("sessions: { network: maybe }\n",
                 "yard.yaml:1:22: sessions.network: expected true or false, got 'maybe'");
    expect_error("sessions: { isolation: none, network: false }\n",
                 "yard.yaml:1:39: sessions.network: 'false' needs isolation bwrap; without "
                 "isolation commands share the host's network");
    expect_error("sessions: { isolation: none, user: nobody }\n",
                 "yard.yaml:1:36: sessions.user: needs isolation bwrap; without isolation "
                 "commands run as the daemon's user");
    expect_error("sessions: { user: 'a b' }\n",
                 "yard.yaml:1:19: sessions.user: 'a b' is not a user name; give a name such as "
                 "'nobody' or a numeric uid");
    expect_error("sessions: { limits: { memory: 1KiB } }\n",
                 "yard.yaml:1:31: sessions.limits.memory: '1KiB' is too small for a shell; use "
                 "at least 1MiB, as '2GiB'");
    expect_error("sessions: { limits: { pids: 0 } }\n",
                 "yard.yaml:1:29: sessions.limits.pids: 0 is out of range; use 1 to 4194304");
    expect_error("sessions: { limits: { cpu: 0 } }\n",
                 "yard.yaml:1:28: sessions.limits.cpu: 0 is out of range; use 0.01 to 4096");
    expect_error(
        "sessions: { limits: { disk: 1GiB } }\n",
        "yard.yaml:1:23: unknown key 'disk' in 'sessions.limits'; valid keys: memory, pids, cpu");
}

/* ---- slurm ---------------------------------------------------------- */

static void test_slurm(void **state)
{
    (void)state;
    struct config *c = parse_ok("slurm:\n"
                                "  cluster1:\n"
                                "    login: \"ssh login.hpc.example.org\"\n"
                                "    partition: gpu\n"
                                "    account: proj42\n"
                                "    qos: normal\n"
                                "    time: 4h\n"
                                "    sbatch: [ \"--constraint=a100\", \"--mem=64G\" ]\n"
                                "    renew_before: 15m\n"
                                "    poll: 2s\n"
                                "  here: {}\n"
                                "models:\n  m: { cmd: x, hosts: [cluster1, local] }\n");
    assert_int_equal(c->n_slurm, 2);
    const struct config_slurm *s = config_find_slurm(c, "cluster1");
    assert_non_null(s);
    assert_null(config_find_slurm(c, "nope"));
    assert_null(config_find_slurm(NULL, "cluster1"));
    assert_string_equal(s->login, "ssh login.hpc.example.org");
    assert_string_equal(s->partition, "gpu");
    assert_string_equal(s->account, "proj42");
    assert_string_equal(s->qos, "normal");
    assert_true(s->time_ms == 4ull * 3600 * 1000);
    assert_int_equal(s->n_sbatch, 2);
    assert_string_equal(s->sbatch[1], "--mem=64G");
    assert_true(s->renew_before_ms == 15ull * 60 * 1000);
    assert_true(s->poll_ms == 2000);
    assert_int_equal(s->line, 2);
    /* What is validated but not done yet says so. */
    int login_warned = 0;
    for (size_t i = 0; i < c->n_warnings; i++)
        login_warned |= strstr(c->warnings[i], "slurm.cluster1.renew_before: renewal is not "
                                               "done through a login node yet") != NULL;
    assert_true(login_warned);
    assert_int_equal(c->n_warnings, 1);
    /* Defaults: nothing asked of Slurm but what the cluster defaults to. */
    const struct config_slurm *d = config_find_slurm(c, "here");
    assert_null(d->login);
    assert_null(d->partition);
    assert_true(d->time_ms == 0 && d->renew_before_ms == 0 && d->poll_ms == 10000);
    assert_int_equal(d->n_sbatch, 0);

    /* A change is for a restart: clusters are hosts read at start. */
    struct config *c2 = parse_ok("slurm:\n  here: { poll: 3s }\n");
    char *applied, *restart;
    config_reload_changes(c, c2, &applied, &restart);
    assert_non_null(strstr(restart, "slurm"));
    free(applied);
    free(restart);
    config_reload_changes(c2, c2, &applied, &restart);
    assert_null(strstr(restart, "slurm"));
    free(applied);
    free(restart);
    config_free(c2);
    config_free(c);

    expect_error("slurm: [a]\n",
                 "yard.yaml:1:8: slurm: expected a mapping of clusters, as { cluster1: { "
                 "partition: gpu } }, got a list");
    expect_error("slurm:\n  local: {}\n",
                 "yard.yaml:2:3: slurm: 'local' is reserved for this machine; name the cluster "
                 "differently");
    expect_error("pods:\n  p1: {}\nslurm:\n  p1: {}\n",
                 "yard.yaml:4:3: slurm: 'p1' is also a pod (pods.p1 at line 2); a host name is "
                 "one pod, one cloud or one cluster, so name the cluster differently");
    expect_error("slurm:\n  c1: { partitoin: gpu }\n",
                 "yard.yaml:2:9: unknown key 'partitoin' in Slurm cluster 'c1'; did you mean "
                 "'partition'?");
    expect_error("slurm:\n  c1: { login: \"login.example.org\" }\n",
                 "yard.yaml:2:16: slurm.c1.login: 'login.example.org' is not an ssh command "
                 "line; give the one that reaches the login node, as 'ssh "
                 "login.hpc.example.org' (leave 'login' out where yard runs on a submit host)");
    expect_error("slurm:\n  c1: { partition: \"gpu a\" }\n",
                 "yard.yaml:2:20: slurm.c1.partition: 'gpu a' is not a Slurm name; use letters, "
                 "digits, '_', '.' and '-', as 'gpu'");
    expect_error("slurm:\n  c1: { time: 30s }\n",
                 "yard.yaml:2:15: slurm.c1.time: '30s' is shorter than Slurm's smallest limit; "
                 "use at least 1m, as '4h'");
    expect_error("slurm:\n  c1: { sbatch: [ \"--time=10\" ] }\n",
                 "yard.yaml:2:19: slurm.c1.sbatch: '--time=10' is set by yard: give the limit "
                 "as 'time'; remove it here");
    expect_error("slurm:\n  c1: { sbatch: [ \"-Jname\" ] }\n",
                 "yard.yaml:2:19: slurm.c1.sbatch: '-Jname' is set by yard: yard names its jobs "
                 "itself, so it knows them for its own; remove it here");
    expect_error("slurm:\n  c1: { sbatch: [ constraint ] }\n",
                 "yard.yaml:2:19: slurm.c1.sbatch: 'constraint' is not an sbatch option; give "
                 "each option with its value in one item, as '--constraint=a100'");
    expect_error("slurm:\n  c1: { renew_before: 15m }\n",
                 "yard.yaml:2:23: slurm.c1.renew_before: renewal needs the job's limit; give "
                 "'time' too, as 'time: 4h'");
    expect_error("slurm:\n  c1: { time: 10m, renew_before: 10m }\n",
                 "yard.yaml:2:34: slurm.c1.renew_before: '10m' is not shorter than time ('10m'); "
                 "give a lead time well inside the limit, as '15m' for '4h'");
    expect_error("slurm:\n  c1: { poll: 500ms }\n",
                 "yard.yaml:2:15: slurm.c1.poll: '500ms' is out of range; poll the queue every "
                 "1s to 10m, as '10s'");
}

/* Keys read only at start: a reload that changes one names it as needing a restart, and the
 * running config keeps what runs, so the next reload names it again. */
static void test_reload_start_only_keys(void **state)
{
    (void)state;
    static const char *const base = "gpus: [{index: 0, memory: 24GiB}]\n"
                                    "gpu_ledger: /tmp/ledger-a\n"
                                    "tools: {nvidia_smi: /opt/smi-a}\n"
                                    "sessions:\n  max_sessions: 4\n  env: {A: '1'}\n"
                                    "models:\n  m:\n    cmd: x --port ${PORT}\n";
    static const struct {
        const char *from, *to, *key;
    } cases[] = {
        {"memory: 24GiB", "memory: 48GiB", "gpus"},
        {"gpus: [{index: 0, memory: 24GiB}]\n", "", "gpus"},
        {"ledger-a", "ledger-b", "gpu_ledger"},
        {"smi-a", "smi-b", "tools.nvidia_smi"},
        {"max_sessions: 4", "max_sessions: 5", "sessions"},
        {"A: '1'", "A: '2'", "sessions"},
        {"sessions:\n  max_sessions: 4\n  env: {A: '1'}\n", "", "sessions"},
    };
    struct config *running = parse_ok(base);
    char *applied, *restart;
    config_reload_changes(running, running, &applied, &restart);
    assert_string_equal(restart, "");
    free(applied);
    free(restart);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *at = strstr(base, cases[i].from);
        assert_non_null(at);
        char *y =
            xstrfmt("%.*s%s%s", (int)(at - base), base, cases[i].to, at + strlen(cases[i].from));
        struct config *next = parse_ok(y);
        free(y);
        config_reload_changes(running, next, &applied, &restart);
        assert_string_equal(restart, cases[i].key);
        assert_string_equal(applied, "");
        free(applied);
        free(restart);
        /* The reload keeps what runs: the file still differs from the running config. */
        struct config *file = parse_ok(base);
        config_keep_start_only(file, next);
        config_free(file);
        config_reload_changes(next, running, &applied, &restart);
        assert_string_equal(restart, "");
        free(applied);
        free(restart);
        config_free(next);
    }
    config_free(running);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_port),
        cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_local_reserved),
        cmocka_unit_test(test_hosts),
        cmocka_unit_test(test_eviction_policies),
        cmocka_unit_test(test_unknown_key_suggests),
        cmocka_unit_test(test_unknown_engine),
        cmocka_unit_test(test_port_conflicts),
        cmocka_unit_test(test_alias_collision),
        cmocka_unit_test(test_group_unknown_member),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_empty_and_bad_cmd),
        cmocka_unit_test(test_unknown_macro),
        cmocka_unit_test(test_stop_cmd),
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_yaml_syntax_error),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_top_level_errors),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_replicas),
        cmocka_unit_test(test_full_round_trip),
        cmocka_unit_test(test_sizes_and_durations),
        cmocka_unit_test(test_two_exclusive_groups_ok),
        cmocka_unit_test(test_split_argv),
        cmocka_unit_test(test_expand_cmd),
        cmocka_unit_test(test_pods),
        cmocka_unit_test(test_checkpoint_store),
        cmocka_unit_test(test_empty_api_keys),
        cmocka_unit_test(test_ui_and_admin_keys),
        cmocka_unit_test(test_name_bounds),
        cmocka_unit_test(test_nul_in_scalars),
        cmocka_unit_test(test_many_models),
        cmocka_unit_test(test_clouds),
        cmocka_unit_test(test_slurm),
        cmocka_unit_test(test_cloud_errors),
        cmocka_unit_test(test_cloud_api_key),
        cmocka_unit_test(test_name_from),
        cmocka_unit_test(test_sessions_defaults),
        cmocka_unit_test(test_sessions_full),
        cmocka_unit_test(test_sessions_errors),
        cmocka_unit_test(test_reload_start_only_keys),
    };
    return cmocka_run_group_tests(tests, NULL, cloud_files_remove);
}
