/*
 * Instance specs (sup/spec.h): what a configured model's spec holds, deep
 * copies, the host preference, which config edits change the process a
 * reload compares (and the reason it gives), and what a start of a spec
 * built by hand, with no model, runs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "config/config.h"
#include "engine/adapter.h"
#include "sup/sup_int.h"

static const char base_config[] =
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
    "    ttl: 30m\n"
    "    restart: on-failure\n"
    "    max_restarts: 3\n"
    "    concurrency: 4\n"
    "    eviction: { weights: offload, process: keep_running }\n"
    "    hosts: [ gpu-box-1, local ]\n"
    "  tool:\n"
    "    engine: generic\n"
    "    cmd: ./tool --listen 127.0.0.1:${PORT}\n"
    "    health: { path: /ready, status: 204 }\n"
    "    gpus: [1, 3]\n"
    "    replicas: 2\n"
    "    eviction: { weights: discard, process: checkpoint }\n";

static struct config *parse_ok(const char *text)
{
    struct config_errors errs = {0};
    struct config *c = config_parse(text, strlen(text), "test", &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    config_errors_release(&errs);
    assert_non_null(c);
    return c;
}

/* base_config with its first from replaced by to. */
static struct config *edited(const char *from, const char *to)
{
    const char *at = strstr(base_config, from);
    assert_non_null(at);
    char *text = xstrfmt("%.*s%s%s", (int)(at - base_config), base_config, to, at + strlen(from));
    struct config *c = parse_ok(text);
    free(text);
    return c;
}

static void test_spec_of_model_copies_everything(void **state)
{
    (void)state;
    struct config *c = parse_ok(base_config);
    struct sup_spec q, t;
    sup_spec_of_model(&c->models[0], &q);
    sup_spec_of_model(&c->models[1], &t);
    config_free(c); /* nothing in a spec points into the config */

    assert_string_equal(q.name, "qwen-7b");
    assert_string_equal(q.model_id, "Qwen/Qwen2.5-7B-Instruct");
    assert_string_equal(q.engine, "vllm");
    assert_non_null(strstr(q.cmd, "--served-model-name ${NAME}"));
    assert_string_equal(q.cwd, "/srv");
    assert_string_equal(q.gpus, "0");
    assert_string_equal(q.pod, "gpu-box-1");
    assert_int_equal(q.n_env, 2);
    assert_int_equal(q.sleep_level, 1);
    assert_false(q.suspends || q.checkpoints);
    assert_int_equal(q.replicas, 1);
    assert_int_equal(q.slots, 2);     /* two hosts: one fallback */
    assert_null(q.watch.health_path); /* an adapter knows its own */
    assert_true(q.watch.restart_on_failure);
    assert_int_equal(q.watch.max_restarts, 3);

    assert_string_equal(t.gpus, "1,3");
    assert_null(t.pod);
    assert_string_equal(t.watch.health_path, "/ready");
    assert_int_equal(t.watch.health_status, 204);
    assert_int_equal(t.sleep_level, 2);
    assert_true(t.checkpoints);
    assert_int_equal(t.slots, 2); /* two replicas, one host */

    struct sup_spec copy;
    sup_spec_copy(&copy, &q);
    sup_spec_release(&q);
    assert_string_equal(copy.name, "qwen-7b");
    assert_string_equal(copy.env[0].key, "HF_HOME");
    assert_string_equal(copy.hosts[1], "local");
    sup_spec_release(&copy);
    sup_spec_release(&t);
}

static void test_host_rank(void **state)
{
    (void)state;
    struct config *c = parse_ok(base_config);
    struct sup_spec q, t;
    sup_spec_of_model(&c->models[0], &q);
    sup_spec_of_model(&c->models[1], &t);
    config_free(c);
    assert_int_equal(sup_spec_host_rank(&q, "gpu-box-1"), 0);
    assert_int_equal(sup_spec_host_rank(&q, "local"), 1);
    assert_int_equal(sup_spec_host_rank(&q, NULL), 1);
    assert_int_equal(sup_spec_host_rank(&q, "gpu-box-2"), -1);
    /* no preference: this machine alone */
    assert_int_equal(sup_spec_host_rank(&t, NULL), 0);
    assert_int_equal(sup_spec_host_rank(&t, "gpu-box-1"), -1);
    sup_spec_release(&q);
    sup_spec_release(&t);
}

/* Which edits change the process a reload compares, and what the restart's reason lists. */
static void test_same_process_and_diff(void **state)
{
    (void)state;
    static const struct {
        const char *from, *to;
        int same;
        const char *diff;
    } edits[] = {
        {"ttl: 30m", "ttl: 1h", 1, "eviction"},
        {"aliases: [ qwen, q7 ]", "aliases: [ qwen ]", 1, "eviction"},
        {"concurrency: 4", "concurrency: 8", 1, "eviction"},
        {"max_restarts: 3", "max_restarts: 9", 1, "eviction"},
        {"{ HF_HOME: /models, VLLM_LOGGING_LEVEL: DEBUG }",
         "{ VLLM_LOGGING_LEVEL: DEBUG, HF_HOME: /models }", 1, "eviction"},
        {"--served-model-name", "--served-model", 0, "cmd"},
        {"model: Qwen/Qwen2.5-7B-Instruct", "model: Qwen/Other", 0, "model"},
        {"engine: vllm", "engine: sglang", 0, "engine"},
        {"HF_HOME: /models", "HF_HOME: /data", 0, "env"},
        {"VLLM_LOGGING_LEVEL: DEBUG }", "VLLM_LOGGING_LEVEL: DEBUG, X: 1 }", 0, "env"},
        {"cwd: /srv", "cwd: /tmp", 0, "cwd"},
        {"port: auto", "port: 7002", 0, "port"},
        {"gpus: 1\n", "gpus: 2\n", 0, "gpus"},
        {"gpus: 1\n", "gpus: [0]\n", 1, "eviction"}, /* the same GPU, said another way */
        {"cwd: /srv\n    port: auto", "cwd: /tmp\n    port: 7002", 0, "cwd, port"},
        /* where it runs is checked against the preference by the reload itself */
        {"hosts: [ gpu-box-1, local ]", "hosts: [ gpu-box-2, local ]", 1, "hosts"},
        {"health: { path: /ready, status: 204 }", "health: { path: /ready, status: 200 }", 0,
         "health"},
    };
    struct config *a = parse_ok(base_config);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        struct config *b = edited(edits[i].from, edits[i].to);
        size_t k = strstr(base_config, edits[i].from) > strstr(base_config, "  tool:") ? 1 : 0;
        struct sup_spec was, now;
        sup_spec_of_model(&a->models[k], &was);
        sup_spec_of_model(&b->models[k], &now);
        if (sup_spec_same_process(&was, &now) != edits[i].same)
            fail_msg("'%s' -> '%s': expected same=%d", edits[i].from, edits[i].to, edits[i].same);
        char *d = sup_spec_diff(&was, &now);
        if (strcmp(d, edits[i].diff) != 0)
            fail_msg("'%s' -> '%s': diff '%s', expected '%s'", edits[i].from, edits[i].to, d,
                     edits[i].diff);
        free(d);
        sup_spec_release(&was);
        sup_spec_release(&now);
        config_free(b);
    }
    /* two models are never the same process */
    struct sup_spec q, t;
    sup_spec_of_model(&a->models[0], &q);
    sup_spec_of_model(&a->models[1], &t);
    assert_false(sup_spec_same_process(&q, &t));
    sup_spec_release(&q);
    sup_spec_release(&t);
    config_free(a);
}

/* A spec with no model behind it (as the session pool builds): what one start runs. */
static void test_launch_of_a_hand_built_spec(void **state)
{
    (void)state;
    struct config_kv env[] = {{.key = "WORKDIR", .value = "/w"}};
    struct sup_spec sp = {
        .name = "sess-1",
        .engine = "generic",
        .cmd = "agentd --port ${PORT} --dir ${env.WORKDIR} --id ${NAME}",
        .env = env,
        .n_env = 1,
        .cwd = "/w",
        .checkpoints = 1,
    };
    struct sup__launch l;
    char err[256] = "";
    assert_int_equal(
        sup__launch_of(&sp, engine_find("generic"), 7100, "2", NULL, &l, err, sizeof err), 0);
    const char *const argv[] = {"agentd", "--port", "7100", "--dir", "/w", "--id", "sess-1", NULL};
    for (size_t i = 0; argv[i]; i++)
        assert_string_equal(l.argv[i], argv[i]);
    assert_null(l.argv[7]);
    assert_string_equal(l.cwd, "/w");
    assert_null(l.host);
    int cuda = 0, model = 0, work = 0;
    size_t n = 0;
    for (; l.env[n]; n++) {
        cuda += strcmp(l.env[n], "CUDA_VISIBLE_DEVICES=2") == 0;
        model += strcmp(l.env[n], "YARD_MODEL=sess-1") == 0;
        work += strcmp(l.env[n], "WORKDIR=/w") == 0;
    }
    assert_true(cuda == 1 && model == 1 && work == 1);
    assert_true(n > 3); /* a checkpointed tree also gets the environment CRIU needs */

    /* the same spec at the same port is the same launch; another port is not */
    struct sup__launch again, other;
    assert_int_equal(sup__launch_of(&sp, NULL, 7100, "2", NULL, &again, err, sizeof err), 0);
    assert_int_equal(sup__launch_of(&sp, NULL, 7101, "2", NULL, &other, err, sizeof err), 0);
    assert_true(sup__launch_same(&l, &again));
    assert_false(sup__launch_same(&l, &other));
    sup__launch_release(&again);
    sup__launch_release(&other);
    sup__launch_release(&l);

    /* nothing to start, or a macro it cannot fill: refused with the reason */
    sp.cmd = NULL;
    assert_int_equal(sup__launch_of(&sp, NULL, 7100, "", NULL, &l, err, sizeof err), -EINVAL);
    assert_string_equal(err, "empty command");
    sp.cmd = "agentd ${env.YARD_TEST_SPEC_UNSET}";
    unsetenv("YARD_TEST_SPEC_UNSET");
    assert_int_equal(sup__launch_of(&sp, NULL, 7100, "", NULL, &l, err, sizeof err), -EINVAL);
    assert_string_equal(
        err, "environment variable 'YARD_TEST_SPEC_UNSET' is not set (used in model 'sess-1' cmd)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_of_model_copies_everything),
        cmocka_unit_test(test_host_rank),
        cmocka_unit_test(test_same_process_and_diff),
        cmocka_unit_test(test_launch_of_a_hand_built_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
