// fuzz-sources: src/config/walk.c src/config/keys.c src/config/model.c src/config/argv.c
// fuzz-sources: src/base/alloc.c src/base/buf.c src/base/units.c src/base/hash.c
// fuzz-sources: src/base/suggest.c src/config/clouds.c src/config/sessions.c src/config/slurm.c
// fuzz-sources: src/config/compose.c
// fuzz-libs: -lyaml -ljansson
/*
 * libFuzzer target for config_parse. The input is the text of a config file,
 * given in an exact-size copy so a read past its end is caught.
 *
 * Every message must read "fuzz.yaml:LINE:COL: message" or "fuzz.yaml:
 * message", with a position inside the input, and the messages come in file
 * order. A message the caller already held stays first and untouched. The
 * result is NULL exactly when a message was added.
 *
 * A config that loads must keep the promises the rest of the daemon relies
 * on: values inside their documented ranges, names and aliases within the
 * names rule, no empty api_keys, unique model ports and GPU
 * indexes, every name and alias resolving to its own model, group members
 * resolving to models, and every cmd that loaded also splitting and expanding
 * (an unset ${env.VAR} is the one allowed failure).
 *
 * The node tree config_parse walks (config__load_doc, config/compose.c) is
 * checked against yaml_parser_load's for every document of the input: the
 * same nodes, tags, values, styles, marks, pairs and items, or the same
 * error left in the parser.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config/config.h"
#include "config/internal.h"

#define NAME "fuzz.yaml"

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* Reads a decimal number of at least one digit at *p; returns -1 when there is none. */
static long long read_num(const char **p)
{
    if (!isdigit((unsigned char)**p))
        return -1;
    long long v = 0;
    while (isdigit((unsigned char)**p)) {
        if (v < 1000000000)
            v = v * 10 + (**p - '0');
        (*p)++;
    }
    return v;
}

/*
 * Checks one message; *pos gets line << 32 | column for a positioned one, and
 * is left alone for a message about the whole file.
 */
static void check_message(const char *msg, size_t size, size_t lines, uint64_t *pos)
{
    const char *prefix = NAME ":";
    if (strncmp(msg, prefix, strlen(prefix)) != 0)
        fail("message without the file name", msg);
    if (!strstr(msg, ": "))
        fail("message without ': '", msg);
    const char *p = msg + strlen(prefix);
    if (*p == ' ') {
        if (!p[1])
            fail("empty message", msg);
        return;
    }
    long long line = read_num(&p);
    if (line < 0 || *p++ != ':')
        fail("malformed LINE in message", msg);
    long long col = read_num(&p);
    if (col < 0 || strncmp(p, ": ", 2) != 0 || !p[2])
        fail("malformed COL in message", msg);
    if (line < 1 || (size_t)line > lines + 1)
        fail("line outside the input", msg);
    if (col < 1 || (size_t)col > size + 2)
        fail("column outside the input", msg);
    *pos = (uint64_t)line << 32 | (uint64_t)col;
}

/* The names rule: 1 to 128 bytes of letters, digits, . _ - : @ + ~, not starting with '.' or '-'.
 */
static int valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 128 || s[0] == '.' || s[0] == '-')
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-:@+~", *s))
            return 0;
    return 1;
}

static int has_unset_env(const char *err)
{
    return strstr(err, "is not set") != NULL;
}

static void check_model(const struct config *cfg, size_t i)
{
    const struct config_model *m = &cfg->models[i];
    static const char *const engines[] = {"vllm", "sglang", "llamacpp", "generic"};
    int known = 0;
    for (size_t e = 0; e < sizeof engines / sizeof engines[0]; e++)
        known |= m->engine && !strcmp(m->engine, engines[e]);
    if (!valid_name(m->name))
        fail("model without a valid name", m->name);
    for (size_t a = 0; a < m->n_aliases; a++)
        if (!valid_name(m->aliases[a]))
            fail("model with an invalid alias", m->aliases[a]);
    if (!known)
        fail("model with an unknown engine", m->engine);
    if (!m->cmd || !m->model_id || !m->health_path || m->health_path[0] != '/')
        fail("model with a missing or invalid string", m->name);
    if (m->port < 0 || m->port > 65535 || (m->port && m->port == cfg->listen_port))
        fail("model port out of range or on the listen port", m->name);
    for (size_t j = 0; j < i; j++)
        if (m->port && cfg->models[j].port == m->port)
            fail("two models on one port", m->name);
    if (m->n_gpu_list && (size_t)m->gpu_count != m->n_gpu_list)
        fail("gpu count differs from the gpu list", m->name);
    for (size_t a = 0; a < m->n_gpu_list; a++) {
        if (m->gpu_list[a] < 0 || m->gpu_list[a] > 1023)
            fail("gpu index out of range", m->name);
        for (size_t b = 0; b < a; b++)
            if (m->gpu_list[a] == m->gpu_list[b])
                fail("gpu listed twice", m->name);
    }
    if (m->gpu_count < 0 || m->gpu_count > 1024 || m->startup_timeout_ms == 0 ||
        m->stop_timeout_ms > 3600ull * 1000 || m->health_status < 100 || m->health_status > 599 ||
        m->max_restarts < 0 || m->max_restarts > 1000 || m->concurrency < 0)
        fail("model value out of range", m->name);
    if (config_find_model(cfg, m->name) != m)
        fail("name does not resolve to its model", m->name);
    for (size_t a = 0; a < m->n_aliases; a++)
        if (config_find_model(cfg, m->aliases[a]) != m)
            fail("alias does not resolve to its model", m->aliases[a]);
    for (size_t h = 0; h < m->n_hosts; h++)
        if (m->hosts[h] && config_model_host_rank(m, m->hosts[h]) != (int)h)
            fail("a listed host does not rank where it is listed", m->hosts[h]);

    char err[256] = "";
    char **argv = config_split_argv(m->cmd, err, sizeof err);
    if (!argv || !argv[0])
        fail("a loaded cmd does not split", err);
    config_argv_free(argv);
    err[0] = '\0';
    struct config_cmd cc = config_model_cmd(m);
    argv = config_expand_cmd(&cc, m->port ? m->port : 5800, "0,1", err, sizeof err);
    if (!argv && !has_unset_env(err))
        fail("a loaded cmd does not expand", err);
    config_argv_free(argv);
}

static void check_config(const struct config *cfg)
{
    if (!cfg->path || strcmp(cfg->path, NAME) != 0)
        fail("config path is not the name given", cfg->path);
    if (!cfg->listen_host || cfg->listen_port < 1 || cfg->listen_port > 65535)
        fail("listen address out of range", cfg->listen_host);
    if (cfg->start_port < 1 || cfg->start_port > 65535 || cfg->router_max_queue < 1 ||
        cfg->router_max_wait_ms == 0 || cfg->router_max_body == 0 ||
        cfg->router_max_body > (1ull << 30) || cfg->router_max_header < 1024 ||
        cfg->router_max_header > (16ull << 20) || cfg->router_header_timeout_ms == 0 ||
        cfg->router_idle_timeout_ms == 0 || cfg->router_max_connections < 1 ||
        cfg->log_max_bytes == 0 || cfg->default_startup_timeout_ms == 0 ||
        cfg->default_stop_timeout_ms > 3600ull * 1000 || !cfg->router_policy)
        fail("config value out of range", NULL);
    /* sessions: values in range, the shell an absolute program, backups with a directory */
    const struct config_sessions *ss = &cfg->sessions;
    if (ss->max_sessions < 1 || ss->max_sessions > 100000 || ss->n_shell < 1 || !ss->shell ||
        ss->shell[0][0] != '/' || (ss->backup_after_ms != 0) != (ss->backup_dir != NULL) ||
        (ss->bootstrap && !*ss->bootstrap) || (ss->root && !*ss->root) || ss->limit_pids < 0 ||
        ss->limit_cpu < 0 || (ss->isolation == CONFIG_ISOLATION_NONE && ss->user))
        fail("sessions value out of range", NULL);
    for (size_t i = 0; i < ss->n_env; i++)
        if (!ss->env[i].key || !*ss->env[i].key || !ss->env[i].value)
            fail("sessions env entry missing", NULL);
    /* tool paths have defaults or were given, and are never empty; reading them all
     * lets AddressSanitizer catch one freed too early */
    static volatile size_t sink;
    const char *const tools[] = {cfg->tool_cuda_checkpoint, cfg->tool_criu, cfg->tool_nvidia_smi};
    for (size_t i = 0; i < sizeof tools / sizeof tools[0]; i++) {
        if ((i < 2 && !tools[i]) || (tools[i] && !*tools[i]))
            fail("tool path missing or empty", NULL);
        sink += tools[i] ? strlen(tools[i]) : 0;
    }
    sink += cfg->gpu_ledger ? strlen(cfg->gpu_ledger) : 0;
    if (cfg->api_keys && !cfg->n_api_keys)
        fail("api_keys given but empty: authentication would be off", NULL);
    for (size_t i = 0; i < cfg->n_api_keys; i++)
        if (!cfg->api_keys[i] || !*cfg->api_keys[i])
            fail("empty api key", NULL);
    for (size_t i = 0; i < cfg->n_gpus; i++)
        for (size_t j = 0; j < i; j++)
            if (cfg->gpus[i].index == cfg->gpus[j].index)
                fail("gpu declared twice", NULL);
    for (size_t i = 0; i < cfg->n_models; i++)
        check_model(cfg, i);
    for (size_t g = 0; g < cfg->n_groups; g++) {
        const struct config_group *grp = &cfg->groups[g];
        for (size_t i = 0; i < grp->n_members; i++) {
            const struct config_model *m = config_find_model(cfg, grp->members[i]);
            if (!m || strcmp(m->name, grp->members[i]) != 0)
                fail("group member is not a model name", grp->members[i]);
            for (size_t j = 0; j < i; j++)
                if (!strcmp(grp->members[i], grp->members[j]))
                    fail("group member listed twice", grp->members[i]);
        }
    }
}

static int same_mark(const yaml_mark_t *a, const yaml_mark_t *b)
{
    return a->index == b->index && a->line == b->line && a->column == b->column;
}

static int same_str(const void *a, const void *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static void check_node(const yaml_node_t *x, const yaml_node_t *y)
{
    if (x->type != y->type || !same_str(x->tag, y->tag) ||
        !same_mark(&x->start_mark, &y->start_mark) || !same_mark(&x->end_mark, &y->end_mark))
        fail("a node differs from libyaml's", NULL);
    if (x->type == YAML_SCALAR_NODE) {
        if (x->data.scalar.length != y->data.scalar.length ||
            memcmp(x->data.scalar.value, y->data.scalar.value, x->data.scalar.length + 1) != 0 ||
            x->data.scalar.style != y->data.scalar.style)
            fail("a scalar differs from libyaml's", NULL);
    } else if (x->type == YAML_SEQUENCE_NODE) {
        size_t k = (size_t)(x->data.sequence.items.top - x->data.sequence.items.start);
        if (k != (size_t)(y->data.sequence.items.top - y->data.sequence.items.start) ||
            (k && memcmp(x->data.sequence.items.start, y->data.sequence.items.start,
                         k * sizeof *x->data.sequence.items.start) != 0) ||
            x->data.sequence.style != y->data.sequence.style)
            fail("a sequence differs from libyaml's", NULL);
    } else {
        size_t k = (size_t)(x->data.mapping.pairs.top - x->data.mapping.pairs.start);
        if (k != (size_t)(y->data.mapping.pairs.top - y->data.mapping.pairs.start) ||
            x->data.mapping.style != y->data.mapping.style)
            fail("a mapping differs from libyaml's", NULL);
        for (size_t j = 0; j < k; j++)
            if (x->data.mapping.pairs.start[j].key != y->data.mapping.pairs.start[j].key ||
                x->data.mapping.pairs.start[j].value != y->data.mapping.pairs.start[j].value)
                fail("a mapping's pair differs from libyaml's", NULL);
    }
}

/* Every document read by yaml_parser_load and by config__load_doc: the same trees or errors. */
static void check_tree(const char *text, size_t size)
{
    yaml_parser_t pa, pb;
    if (!yaml_parser_initialize(&pa) || !yaml_parser_initialize(&pb))
        abort();
    yaml_parser_set_input_string(&pa, (const unsigned char *)text, size);
    yaml_parser_set_input_string(&pb, (const unsigned char *)text, size);
    for (;;) {
        yaml_document_t a;
        struct config__doc b;
        int ra = yaml_parser_load(&pa, &a);
        if (ra != config__load_doc(&pb, &b))
            fail("the tree loads where libyaml's fails, or the other way", NULL);
        if (!ra) {
            if (pa.error != pb.error || !same_str(pa.problem, pb.problem) ||
                !same_mark(&pa.problem_mark, &pb.problem_mark) ||
                pa.problem_offset != pb.problem_offset || !same_str(pa.context, pb.context) ||
                (pa.context && !same_mark(&pa.context_mark, &pb.context_mark)))
                fail("the error differs from libyaml's", pa.problem);
            break;
        }
        size_t n = (size_t)(a.nodes.top - a.nodes.start);
        if (n != (size_t)(b.doc.nodes.top - b.doc.nodes.start) ||
            !same_mark(&a.start_mark, &b.doc.start_mark) ||
            !same_mark(&a.end_mark, &b.doc.end_mark) || a.start_implicit != b.doc.start_implicit ||
            a.end_implicit != b.doc.end_implicit)
            fail("the document differs from libyaml's", NULL);
        for (size_t i = 0; i < n; i++)
            check_node(&a.nodes.start[i], &b.doc.nodes.start[i]);
        yaml_document_delete(&a);
        config__doc_release(&b);
        if (!n)
            break;
    }
    yaml_parser_delete(&pa);
    yaml_parser_delete(&pb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    size_t lines = 1;
    /* an upper bound: libyaml also breaks lines at NEL, LS and PS (0x85, 0xa8, 0xa9 last) */
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n' || data[i] == '\r' || data[i] == 0x85 || data[i] == 0xa8 ||
                 data[i] == 0xa9;

    /* A message from before: config_parse appends and must leave it alone. */
    struct config_errors errs = {0};
    errs.msgs = malloc(sizeof *errs.msgs);
    if (!errs.msgs || !(errs.msgs[0] = strdup("earlier")))
        abort();
    errs.n = 1;

    struct config *cfg = config_parse(text, size, NAME, &errs);
    if (errs.n < 1 || strcmp(errs.msgs[0], "earlier") != 0)
        fail("an earlier message was changed", NULL);
    if ((cfg == NULL) != (errs.n > 1))
        fail(cfg ? "a config with messages" : "no config and no message", NULL);

    uint64_t last = 0;
    for (size_t i = 1; i < errs.n; i++) {
        uint64_t pos = last;
        check_message(errs.msgs[i], size, lines, &pos);
        if (pos < last)
            fail("messages out of file order", errs.msgs[i]);
        last = pos;
    }
    if (cfg)
        check_config(cfg);
    check_tree(text, size);

    config_free(cfg);
    config_errors_release(&errs);
    free(text);
    return 0;
}
