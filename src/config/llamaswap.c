/*
 * llama-swap's config translated to yard's (config/llamaswap.h,
 * docs/migrate-from-llama-swap.md). A pure function of the text: libyaml's
 * document API reads it, the yard YAML is written into a buffer, and every
 * key that does not carry over is a note "FILE:LINE:COL: KEY: why".
 */
#include "config/llamaswap.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <yaml.h>

#include "base/alloc.h"
#include "config/config.h"

struct macro {
    const char *name;
    char *value;
};

struct imp {
    yaml_document_t *doc;
    const char *file;
    struct buf *out;
    struct buf *notes;
    struct macro *macros; /* the global ones, in declaration order */
    size_t n_macros;
    char **names; /* llama-swap's model IDs, in order */
    char **yard;  /* the yard name of each (NULL: the model was left out) */
    size_t n_models;
    int grouped_any; /* a groups section was read */
    char **grouped;  /* models some group names */
    size_t n_grouped;
};

static void note(struct imp *im, const yaml_node_t *at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void note(struct imp *im, const yaml_node_t *at, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *why = xvstrfmt(fmt, ap);
    va_end(ap);
    size_t from = im->notes->len;
    if (at)
        buf_printf(im->notes, "%s:%zu:%zu: %s: %s", im->file, at->start_mark.line + 1,
                   at->start_mark.column + 1, key, why);
    else
        buf_printf(im->notes, "%s: %s: %s", im->file, key, why);
    /* Names and values from the file may hold line breaks: a note stays one line. */
    for (size_t i = from; i < im->notes->len; i++)
        if ((unsigned char)im->notes->data[i] < 0x20)
            im->notes->data[i] = ' ';
    buf_appends(im->notes, "\n");
    free(why);
}

static yaml_node_t *node(struct imp *im, int id)
{
    return yaml_document_get_node(im->doc, id);
}

/* A scalar's text, or NULL for anything else. */
static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The value of key in a mapping, or NULL. */
static yaml_node_t *get(struct imp *im, const yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = scalar(node(im, p->key));
        if (k && strcmp(k, key) == 0)
            return node(im, p->value);
    }
    return NULL;
}

/* A YAML double-quoted scalar for s (JSON's escapes are YAML's). */
static void put_str(struct buf *b, const char *s)
{
    json_t *j = json_string(s);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    buf_appends(b, q ? q : "\"\"");
    free(q);
}

/* A whole number of seconds from a scalar (llama-swap's unit), or -1. */
static long seconds_of(const yaml_node_t *n)
{
    const char *s = scalar(n);
    if (!s || !*s)
        return -1;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < -1 ? -2 : v;
}

/* Replaces every ${name} in s by value; returns a new string. */
static char *replace_all(const char *s, const char *name, const char *value)
{
    char pat[80];
    snprintf(pat, sizeof pat, "${%s}", name);
    struct buf b;
    buf_init(&b, 16 << 20);
    const char *p = s;
    for (const char *hit; (hit = strstr(p, pat));) {
        buf_append(&b, p, (size_t)(hit - p));
        buf_appends(&b, value);
        p = hit + strlen(pat);
    }
    buf_appends(&b, p);
    char *r = buf_detach(&b, NULL);
    return r ? r : xstrdup("");
}

/*
 * s with macros expanded as llama-swap does: the last declared first, so a
 * macro may use one declared before it. ${PORT}, ${env.X} and ${PID} stay:
 * yard's cmd has the first two with the same meaning.
 */
static char *expand(const char *s, const struct macro *m, size_t n)
{
    char *r = xstrdup(s);
    for (size_t i = n; i-- > 0;) {
        char *next = replace_all(r, m[i].name, m[i].value);
        free(r);
        r = next;
    }
    return r;
}

/* The first ${NAME} left in s that yard does not know (not PORT, env.X): a new string, or NULL. */
static char *unknown_macro(const char *s)
{
    for (const char *p = strstr(s, "${"); p; p = strstr(p + 2, "${")) {
        const char *end = strchr(p, '}');
        if (!end)
            return NULL;
        size_t len = (size_t)(end - p - 2);
        if ((len == 4 && strncmp(p + 2, "PORT", 4) == 0) || strncmp(p + 2, "env.", 4) == 0)
            continue;
        return xstrndup(p + 2, len);
    }
    return NULL;
}

/* llama-swap drops the lines of cmd that start with '#' and joins the rest. */
static char *strip_comments(const char *s)
{
    struct buf b;
    buf_init(&b, 16 << 20);
    for (const char *line = s; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *t = line;
        while (t < line + len && isspace((unsigned char)*t))
            t++;
        if (t < line + len && *t != '#') {
            if (b.len)
                buf_appends(&b, " ");
            buf_append(&b, line, len);
        }
        line += len + (nl ? 1 : 0);
    }
    char *r = buf_detach(&b, NULL);
    return r ? r : xstrdup("");
}

/* The engine a program name or an image names, or NULL. */
static const char *engine_named(const char *s)
{
    if (strstr(s, "llama-server") || strstr(s, "llama.cpp"))
        return "llamacpp";
    if (strstr(s, "sglang"))
        return "sglang";
    if (strstr(s, "vllm"))
        return "vllm";
    return NULL;
}

/*
 * yard's engine for a command: its program (vllm, llama-server...), the
 * module of `python -m`, a container's image, or the flavor of yard's own
 * stand-in engine; generic for anything else.
 */
static const char *engine_of(const char *cmd)
{
    char why[200];
    char **argv = config_split_argv(cmd, why, sizeof why);
    const char *e = NULL;
    if (!argv)
        return "generic";
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (strcmp(prog, "docker") == 0 || strcmp(prog, "podman") == 0 ||
        strcmp(prog, "nerdctl") == 0) {
        /* The image: the first word after run that is neither an option nor its value. */
        for (size_t i = 1; argv[i] && !e; i++)
            if (argv[i][0] != '-' && (i < 2 || argv[i - 1][0] != '-' || strchr(argv[i - 1], '=')))
                e = strcmp(argv[i], "run") == 0 ? NULL : engine_named(argv[i]);
    } else if (strncmp(prog, "python", 6) == 0) {
        for (size_t i = 1; argv[i] && argv[i + 1] && !e; i++)
            if (strcmp(argv[i], "-m") == 0)
                e = engine_named(argv[i + 1]);
    } else if (strcmp(prog, "mock-engine") == 0) {
        for (size_t i = 1; argv[i] && argv[i + 1] && !e; i++)
            if (strcmp(argv[i], "--flavor") == 0)
                e = strcmp(argv[i + 1], "vllm") == 0       ? "vllm"
                    : strcmp(argv[i + 1], "sglang") == 0   ? "sglang"
                    : strcmp(argv[i + 1], "llamacpp") == 0 ? "llamacpp"
                                                           : NULL;
    } else {
        e = engine_named(prog);
    }
    config_argv_free(argv);
    return e ? e : "generic";
}

static struct macro *read_macros(struct imp *im, const yaml_node_t *map, size_t *n,
                                 const char *where)
{
    *n = 0;
    if (!map)
        return NULL;
    if (map->type != YAML_MAPPING_NODE) {
        note(im, map, where, "not a mapping of names to values; left out");
        return NULL;
    }
    size_t cap = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    struct macro *m = xcalloc(cap ? cap : 1, sizeof *m);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = scalar(node(im, p->key));
        const char *v = scalar(node(im, p->value));
        if (!k || !v) {
            note(im, node(im, p->key), where, "a macro's value must be a scalar; left out");
            continue;
        }
        m[*n].name = k;
        m[*n].value = xstrdup(v);
        (*n)++;
    }
    return m;
}

static void free_macros(struct macro *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].value);
    free(m);
}

/* The yard name of llama-swap's model id, or NULL when it was left out. */
static const char *yard_name(struct imp *im, const char *id)
{
    for (size_t i = 0; i < im->n_models; i++)
        if (strcmp(im->names[i], id) == 0)
            return im->yard[i];
    return NULL;
}

/* Keys of a model that carry over, and what the others are. */
static const char *const model_not_translated[][2] = {
    {"useModelName", "yard sends the model name the client used; set the engine's served name "
                     "to it instead (e.g. --served-model-name or --alias)"},
    {"unlisted", "yard lists every model in /v1/models"},
    {"name", "yard does not serve display names yet"},
    {"description", "yard does not serve descriptions yet"},
    {"metadata", "yard does not serve metadata yet"},
    {"capabilities", "yard does not serve capabilities yet"},
    {"timeouts", "yard's router timeouts are global (router.*_timeout)"},
    {"compat", "not applicable"},
    {"sendLoadingState", "yard sends load progress as SSE comments to waiting streams"},
};

/*
 * n as a YAML flow value (JSON-like): plain scalars that YAML reads as
 * numbers, booleans or null as they are, every other scalar quoted, with the
 * macros expanded in its text.
 */
static void put_flow(struct imp *im, const yaml_node_t *n, const struct macro *m, size_t nm)
{
    if (n->type == YAML_SCALAR_NODE) {
        const char *v = scalar(n);
        char *end;
        int plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (plain && *v && (strtod(v, &end), !*end) &&
            (isdigit((unsigned char)v[0]) || v[0] == '-'))
            buf_appends(im->out, v);
        else if (plain && (!strcmp(v, "true") || !strcmp(v, "false") || !strcmp(v, "null")))
            buf_appends(im->out, v);
        else {
            char *x = expand(v, m, nm);
            put_str(im->out, x);
            free(x);
        }
        return;
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        buf_appends(im->out, "[");
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            buf_appends(im->out, it == n->data.sequence.items.start ? "" : ", ");
            put_flow(im, node(im, *it), m, nm);
        }
        buf_appends(im->out, "]");
        return;
    }
    buf_appends(im->out, "{");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        buf_appends(im->out, p == n->data.mapping.pairs.start ? "" : ", ");
        const char *k = scalar(node(im, p->key));
        put_str(im->out, k ? k : "");
        buf_appends(im->out, ": ");
        put_flow(im, node(im, p->value), m, nm);
    }
    buf_appends(im->out, "}");
}

/* llama-swap's filters as yard's: stripParams (a comma-separated string), setParams, setParamsByID.
 */
static void put_filters(struct imp *im, const char *id, const char *name, const yaml_node_t *f,
                        const struct macro *m, size_t nm)
{
    char key[400];
    snprintf(key, sizeof key, "models.%s.filters", id);
    if (f->type != YAML_MAPPING_NODE) {
        note(im, f, key, "not a mapping; left out");
        return;
    }
    const yaml_node_t *strip = get(im, f, "stripParams");
    if (!strip)
        strip = get(im, f, "strip_params");
    const yaml_node_t *set = get(im, f, "setParams");
    const yaml_node_t *by = get(im, f, "setParamsByID");
    buf_appends(im->out, "    filters:\n");
    if (scalar(strip) && *scalar(strip)) {
        buf_appends(im->out, "      strip_params: [");
        int first = 1;
        char *list = xstrdup(scalar(strip));
        for (char *save = NULL, *t = strtok_r(list, ", \t", &save); t;
             t = strtok_r(NULL, ", \t", &save)) {
            if (!strcmp(t, "model") || !strcmp(t, "stream")) {
                note(im, strip, key, "'%s' is yard's to route by; it stays", t);
                continue;
            }
            buf_appends(im->out, first ? "" : ", ");
            first = 0;
            put_str(im->out, t);
        }
        free(list);
        buf_appends(im->out, "]\n");
    }
    if (set && set->type == YAML_MAPPING_NODE) {
        buf_appends(im->out, "      set_params: ");
        put_flow(im, set, m, nm);
        buf_appends(im->out, "\n");
    }
    if (by && by->type == YAML_MAPPING_NODE) {
        buf_appends(im->out, "      set_params_by_id:\n");
        for (yaml_node_pair_t *p = by->data.mapping.pairs.start; p < by->data.mapping.pairs.top;
             p++) {
            const char *k = scalar(node(im, p->key));
            char *kid = expand(k ? k : "", m, nm);
            /* The model's own ID is its yard name: a renamed model keeps its set. */
            buf_appends(im->out, "        ");
            put_str(im->out, strcmp(kid, id) == 0 ? name : kid);
            buf_appends(im->out, ": ");
            put_flow(im, node(im, p->value), m, nm);
            buf_appends(im->out, "\n");
            free(kid);
        }
    }
    for (yaml_node_pair_t *p = f->data.mapping.pairs.start; p < f->data.mapping.pairs.top; p++) {
        const char *k = scalar(node(im, p->key));
        if (k && strcmp(k, "stripParams") && strcmp(k, "strip_params") && strcmp(k, "setParams") &&
            strcmp(k, "setParamsByID"))
            note(im, node(im, p->key), key, "'%s' is not one of llama-swap's filters; left out", k);
    }
}

static void model_entry(struct imp *im, size_t idx, const yaml_node_t *body)
{
    const char *id = im->names[idx];
    const char *name = im->yard[idx];
    char key[400];
    if (!body || body->type != YAML_MAPPING_NODE) {
        snprintf(key, sizeof key, "models.%s", id);
        note(im, body, key, "not a mapping; left out");
        return;
    }
    size_t n_local = 0;
    snprintf(key, sizeof key, "models.%s.macros", id);
    struct macro *local = read_macros(im, get(im, body, "macros"), &n_local, key);
    /* MODEL_ID first, then the global macros with the model's own overlaid. */
    size_t n = 0;
    struct macro *m = xcalloc(im->n_macros + n_local + 1, sizeof *m);
    m[n].name = "MODEL_ID";
    m[n++].value = xstrdup(id);
    for (size_t i = 0; i < im->n_macros; i++) {
        m[n].name = im->macros[i].name;
        m[n++].value = xstrdup(im->macros[i].value);
    }
    for (size_t i = 0; i < n_local; i++) {
        size_t k = 0;
        while (k < n && strcmp(m[k].name, local[i].name) != 0)
            k++;
        if (k == n)
            m[n++].name = local[i].name;
        else
            free(m[k].value);
        m[k].value = xstrdup(local[i].value);
    }

    const yaml_node_t *cmd_n = get(im, body, "cmd");
    if (!scalar(cmd_n)) {
        snprintf(key, sizeof key, "models.%s.cmd", id);
        note(im, cmd_n ? cmd_n : body, key, "missing or not a string; the model is left out");
        im->yard[idx] = NULL;
        free((char *)name);
        goto out;
    }
    char *stripped = strip_comments(scalar(cmd_n));
    char *cmd = expand(stripped, m, n);
    free(stripped);
    char *left = unknown_macro(cmd);
    if (left) {
        snprintf(key, sizeof key, "models.%s.cmd", id);
        note(im, cmd_n, key, "${%s} is not a macro of this config; it is left as written", left);
        free(left);
    }
    const char *engine = engine_of(cmd);
    buf_appends(im->out, "  ");
    put_str(im->out, name);
    buf_printf(im->out, ":\n    engine: %s\n    cmd: ", engine);
    put_str(im->out, cmd);
    buf_appends(im->out, "\n");
    if (strcmp(name, id) != 0) {
        snprintf(key, sizeof key, "models.%s", id);
        note(im, body, key,
             "renamed '%s': a yard name holds only letters, digits and . _ - : @ + ~", name);
    }

    /* proxy: where llama-swap reaches it; yard reaches the engine on its port. */
    const yaml_node_t *proxy_n = get(im, body, "proxy");
    if (scalar(proxy_n)) {
        char *proxy = expand(scalar(proxy_n), m, n);
        const char *hostp = strstr(proxy, "://");
        hostp = hostp ? hostp + 3 : proxy;
        const char *colon = strrchr(hostp, ':');
        const char *slash = strchr(hostp, '/');
        size_t hlen = colon   ? (size_t)(colon - hostp)
                      : slash ? (size_t)(slash - hostp)
                              : strlen(hostp);
        int local_host = (hlen == 9 && strncmp(hostp, "localhost", 9) == 0) ||
                         (hlen == 9 && strncmp(hostp, "127.0.0.1", 9) == 0) ||
                         (hlen == 5 && strncmp(hostp, "[::1]", 5) == 0);
        snprintf(key, sizeof key, "models.%s.proxy", id);
        if (!local_host)
            note(im, proxy_n, key,
                 "yard starts engines on their host and reaches them there; '%s' is not "
                 "translated (a remote machine is a pod: yard pod add)",
                 proxy);
        else if (colon && strncmp(colon + 1, "${PORT}", 7) != 0) {
            long port = strtol(colon + 1, NULL, 10);
            if (port > 0 && port < 65536 && !strstr(cmd, "${PORT}"))
                buf_printf(im->out, "    port: %ld\n", port);
        }
        if (slash && strcmp(slash, "/") != 0)
            note(im, proxy_n, key,
                 "the path '%s' is not translated: yard forwards the client's path", slash);
        free(proxy);
    }
    const yaml_node_t *check = get(im, body, "checkEndpoint");
    if (scalar(check)) {
        snprintf(key, sizeof key, "models.%s.checkEndpoint", id);
        const char *path = scalar(check);
        if (strcmp(engine, "generic") != 0) {
            if (strcmp(path, "/health") != 0)
                note(im, check, key,
                     "a %s engine's readiness is read by its adapter; '%s' is not used", engine,
                     path);
        } else if (strcmp(path, "none") == 0) {
            note(im, check, key, "yard probes every generic engine; it keeps the default /health");
        } else if (path[0] == '/') {
            buf_appends(im->out, "    health: { path: ");
            put_str(im->out, path);
            buf_appends(im->out, " }\n");
        } else {
            note(im, check, key, "'%s' is not a path; left out", path);
        }
    }
    free(cmd);

    /* cmdStop: yard's stop_cmd, but for ${PID}, which names nothing yard knows. */
    const yaml_node_t *stop_n = get(im, body, "cmdStop");
    if (stop_n) {
        snprintf(key, sizeof key, "models.%s.cmdStop", id);
        char *st = scalar(stop_n) ? strip_comments(scalar(stop_n)) : NULL;
        char *stop = st ? expand(st, m, n) : NULL;
        free(st);
        char *bad = stop ? unknown_macro(stop) : NULL;
        if (!stop || !*stop)
            note(im, stop_n, key, "not a command; left out");
        else if (bad && strcmp(bad, "PID") == 0)
            note(im, stop_n, key,
                 "not translated: ${PID} has no meaning in yard, which stops an engine itself "
                 "(SIGTERM to its process group, then SIGKILL); stop_cmd is for engines that "
                 "run elsewhere, e.g. docker stop NAME");
        else if (bad)
            note(im, stop_n, key, "${%s} is not a macro of this config; left out", bad);
        else {
            buf_appends(im->out, "    stop_cmd: ");
            put_str(im->out, stop);
            buf_appends(im->out, "\n");
        }
        free(bad);
        free(stop);
    }

    const yaml_node_t *ttl = get(im, body, "ttl");
    if (ttl) {
        long s = seconds_of(ttl);
        snprintf(key, sizeof key, "models.%s.ttl", id);
        if (s > 0)
            buf_printf(im->out, "    ttl: %lds\n", s);
        else if (s == 0)
            buf_appends(im->out, "    ttl: 0\n");
        else if (s < -1)
            note(im, ttl, key, "not a whole number of seconds; left out");
    }
    const yaml_node_t *unload = get(im, body, "unloadTimeout");
    if (unload) {
        long s = seconds_of(unload);
        snprintf(key, sizeof key, "models.%s.unloadTimeout", id);
        if (s > 0)
            buf_printf(im->out, "    stop_timeout: %lds\n", s);
        else
            note(im, unload, key, "not a positive number of seconds; left out");
    }
    const yaml_node_t *env = get(im, body, "env");
    if (env && env->type == YAML_SEQUENCE_NODE) {
        int first = 1;
        for (yaml_node_item_t *it = env->data.sequence.items.start;
             it < env->data.sequence.items.top; it++) {
            const char *kv = scalar(node(im, *it));
            const char *eq = kv ? strchr(kv, '=') : NULL;
            if (!eq || eq == kv) {
                snprintf(key, sizeof key, "models.%s.env", id);
                note(im, node(im, *it), key, "not NAME=VALUE; left out");
                continue;
            }
            char *k = xstrndup(kv, (size_t)(eq - kv));
            char *v = expand(eq + 1, m, n);
            buf_appends(im->out, first ? "    env:\n" : "");
            first = 0;
            buf_appends(im->out, "      ");
            put_str(im->out, k);
            buf_appends(im->out, ": ");
            put_str(im->out, v);
            buf_appends(im->out, "\n");
            free(k);
            free(v);
        }
    } else if (env) {
        snprintf(key, sizeof key, "models.%s.env", id);
        note(im, env, key, "not a list of NAME=VALUE; left out");
    }
    const yaml_node_t *aliases = get(im, body, "aliases");
    if (aliases && aliases->type == YAML_SEQUENCE_NODE) {
        int first = 1;
        for (yaml_node_item_t *it = aliases->data.sequence.items.start;
             it < aliases->data.sequence.items.top; it++) {
            const yaml_node_t *a = node(im, *it);
            /* An alias may be written as an object: {name: ALIAS, ...}. */
            const char *an =
                a && a->type == YAML_MAPPING_NODE ? scalar(get(im, a, "name")) : scalar(a);
            char *yn = an ? config_name_from(an, strlen(an)) : NULL;
            snprintf(key, sizeof key, "models.%s.aliases", id);
            if (!yn) {
                note(im, a, key, "an alias with no usable name; left out");
                continue;
            }
            if (strcmp(yn, an) != 0)
                note(im, a, key, "alias '%s' renamed '%s'", an, yn);
            if (a->type == YAML_MAPPING_NODE &&
                a->data.mapping.pairs.top - a->data.mapping.pairs.start > 1)
                note(im, a, key, "only the alias's name carries over");
            buf_appends(im->out, first ? "    aliases: [" : ", ");
            first = 0;
            put_str(im->out, yn);
            free(yn);
        }
        if (!first)
            buf_appends(im->out, "]\n");
    }
    const yaml_node_t *filters = get(im, body, "filters");
    if (filters)
        put_filters(im, id, name, filters, m, n);
    const yaml_node_t *conc = get(im, body, "concurrencyLimit");
    if (conc) {
        long c = seconds_of(conc);
        snprintf(key, sizeof key, "models.%s.concurrencyLimit", id);
        if (c > 0) {
            buf_printf(im->out, "    concurrency: %ld\n", c);
            note(im, conc, key,
                 "translated as concurrency: %ld; yard queues the requests past it instead of "
                 "answering 429",
                 c);
        } else if (c != 0) {
            note(im, conc, key, "not a whole number; left out");
        }
    }
    for (size_t k = 0; k < sizeof model_not_translated / sizeof model_not_translated[0]; k++) {
        const yaml_node_t *v = get(im, body, model_not_translated[k][0]);
        if (v) {
            snprintf(key, sizeof key, "models.%s.%s", id, model_not_translated[k][0]);
            note(im, v, key, "not translated: %s", model_not_translated[k][1]);
        }
    }
    for (yaml_node_pair_t *p = body->data.mapping.pairs.start; p < body->data.mapping.pairs.top;
         p++) {
        const char *k = scalar(node(im, p->key));
        static const char *const known[] = {
            "cmd",           "proxy",   "checkEndpoint", "ttl",
            "unloadTimeout", "env",     "aliases",       "concurrencyLimit",
            "macros",        "filters", "cmdStop"};
        int seen = 0;
        for (size_t i = 0; k && i < sizeof known / sizeof known[0]; i++)
            seen |= strcmp(k, known[i]) == 0;
        for (size_t i = 0; k && i < sizeof model_not_translated / sizeof model_not_translated[0];
             i++)
            seen |= strcmp(k, model_not_translated[i][0]) == 0;
        if (!seen) {
            snprintf(key, sizeof key, "models.%s.%s", id, k ? k : "?");
            note(im, node(im, p->key), key, "not a key of llama-swap's models; left out");
        }
    }
out:
    free_macros(m, n);
    free_macros(local, n_local);
}

/* One yard exclusive group. */
static void put_group(struct imp *im, const char *name, char **members, size_t n, int *first)
{
    if (*first)
        buf_appends(im->out, "groups:\n");
    *first = 0;
    buf_appends(im->out, "  ");
    put_str(im->out, name);
    buf_appends(im->out, ":\n    exclusive: true\n    members: [");
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_appends(im->out, ", ");
        put_str(im->out, members[i]);
    }
    buf_appends(im->out, "]\n");
}

struct lgroup {
    const char *name;
    const yaml_node_t *at;
    int swap, exclusive, persistent;
    char **members; /* yard names */
    size_t n;
};

static int flag_of(const yaml_node_t *n, int dflt)
{
    const char *s = scalar(n);
    if (!s)
        return dflt;
    return strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 || strcmp(s, "on") == 0;
}

/* Reads a groups mapping (top-level or routing.router.settings) into g. */
static void read_groups(struct imp *im, const yaml_node_t *map, const char *where,
                        struct lgroup **g, size_t *ng)
{
    if (!map)
        return;
    if (map->type != YAML_MAPPING_NODE) {
        note(im, map, where, "not a mapping of group names; left out");
        return;
    }
    im->grouped_any = 1;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *gname = scalar(node(im, p->key));
        const yaml_node_t *body = node(im, p->value);
        char key[300];
        snprintf(key, sizeof key, "%s.%s", where, gname ? gname : "?");
        const yaml_node_t *mem = get(im, body, "members");
        if (!gname || !mem || mem->type != YAML_SEQUENCE_NODE) {
            note(im, body, key, "a group needs members (a list of model IDs); left out");
            continue;
        }
        *g = xrealloc(*g, (*ng + 1) * sizeof **g);
        struct lgroup *x = &(*g)[(*ng)++];
        memset(x, 0, sizeof *x);
        x->name = gname;
        x->at = body;
        x->swap = flag_of(get(im, body, "swap"), 1);
        x->exclusive = flag_of(get(im, body, "exclusive"), 1);
        x->persistent = flag_of(get(im, body, "persistent"), 0);
        x->members =
            xcalloc((size_t)(mem->data.sequence.items.top - mem->data.sequence.items.start) + 1,
                    sizeof *x->members);
        for (yaml_node_item_t *it = mem->data.sequence.items.start;
             it < mem->data.sequence.items.top; it++) {
            const char *id = scalar(node(im, *it));
            const char *yn = id ? yard_name(im, id) : NULL;
            if (!yn) {
                note(im, node(im, *it), key, "'%s' is not a model of this config; left out",
                     id ? id : "?");
                continue;
            }
            x->members[x->n++] = (char *)yn;
            im->grouped = xrealloc(im->grouped, (im->n_grouped + 1) * sizeof *im->grouped);
            im->grouped[im->n_grouped++] = (char *)yn;
        }
    }
}

/*
 * llama-swap's groups as yard's exclusive groups. A model in no group is in
 * llama-swap's default group (swap and exclusive). swap: true makes a
 * group's members exclude each other; exclusive: true makes each of its
 * members exclude every member of the other groups but persistent ones (a
 * pair group each: yard's groups are symmetric, llama-swap's exclusive is
 * one way).
 */
static void put_groups(struct imp *im, struct lgroup *g, size_t ng)
{
    int first = 1;
    /* The default group: the models no group names. */
    struct lgroup dflt = {.name = "llama-swap", .swap = 1, .exclusive = 1};
    dflt.members = xcalloc(im->n_models + 1, sizeof *dflt.members);
    for (size_t k = 0; k < im->n_models; k++) {
        int named = 0;
        for (size_t i = 0; im->yard[k] && i < im->n_grouped; i++)
            named |= strcmp(im->grouped[i], im->yard[k]) == 0;
        if (im->yard[k] && !named)
            dflt.members[dflt.n++] = im->yard[k];
    }
    if (dflt.n) {
        g = xrealloc(g, (ng + 1) * sizeof *g);
        g[ng++] = dflt;
    } else {
        free(dflt.members);
    }
    if (dflt.n > 1 && !im->grouped_any)
        buf_appends(im->out,
                    "# llama-swap runs one model at a time when no group is configured.\n");
    for (size_t i = 0; i < ng; i++)
        if (g[i].swap && g[i].n > 1)
            put_group(im, g[i].name, g[i].members, g[i].n, &first);
    int one_way = 0;
    for (size_t i = 0; i < ng; i++) {
        if (!g[i].exclusive)
            continue;
        for (size_t j = 0; j < ng; j++) {
            if (j == i || g[j].persistent || (g[j].exclusive && j < i))
                continue; /* a pair of two exclusive groups is written once */
            if (!g[j].exclusive)
                one_way = 1;
            for (size_t a = 0; a < g[i].n; a++)
                for (size_t b = 0; b < g[j].n; b++) {
                    char *pair[2] = {g[i].members[a], g[j].members[b]};
                    char *gname = xstrfmt("%s+%s", pair[0], pair[1]);
                    put_group(im, gname, pair, 2, &first);
                    free(gname);
                }
        }
    }
    if (one_way)
        note(im, NULL, "groups",
             "an exclusive group unloads the non-exclusive ones in llama-swap but not the other "
             "way; yard's groups work both ways, so asking for a member of a non-exclusive group "
             "also unloads the exclusive group's model");
    for (size_t i = 0; i < ng; i++)
        free(g[i].members);
    free(g);
}

/* ---- the matrix ---- */

/* A list of sets of model indexes (into im->names), each a bitset over the models. */
struct sets {
    unsigned char **v; /* each im->n_models bytes, 1: in the set */
    size_t n;
};

static void sets_free(struct sets *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static void sets_add(struct sets *s, unsigned char *set)
{
    s->v = xrealloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n++] = set;
}

struct mparse {
    struct imp *im;
    const yaml_node_t *sets_node; /* routing.router.settings.matrix.sets, for +ref */
    const yaml_node_t *vars;
    const char *p;
    const char *err;
    int depth;
};

static int is_ident(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.' || (c & 0x80);
}

static void skip_ws(struct mparse *mp)
{
    while (isspace((unsigned char)*mp->p))
        mp->p++;
}

static int m_expr(struct mparse *mp, struct sets *out);

/* A model ID or a var, as a set of one; NULL set with mp->err when unknown. */
static int m_factor(struct mparse *mp, struct sets *out)
{
    struct imp *im = mp->im;
    skip_ws(mp);
    if (*mp->p == '(') {
        mp->p++;
        if (m_expr(mp, out) < 0)
            return -1;
        skip_ws(mp);
        if (*mp->p != ')') {
            mp->err = "a '(' is not closed";
            return -1;
        }
        mp->p++;
        return 0;
    }
    int ref = *mp->p == '+';
    if (ref)
        mp->p++;
    const char *start = mp->p;
    while (is_ident(*mp->p))
        mp->p++;
    if (mp->p == start) {
        mp->err = ref ? "a set name must follow '+'" : "expected a model, a var, '(' or '+set'";
        return -1;
    }
    char *name = xstrndup(start, (size_t)(mp->p - start));
    int rc = 0;
    if (ref) {
        const yaml_node_t *e = get(im, mp->sets_node, name);
        if (!scalar(e) || mp->depth > 16) {
            mp->err = mp->depth > 16 ? "sets refer to each other in a loop" : "'+' names no set";
            rc = -1;
        } else {
            struct mparse sub = *mp;
            sub.p = scalar(e);
            sub.depth++;
            rc = m_expr(&sub, out);
            if (rc == 0) {
                skip_ws(&sub);
                if (*sub.p) {
                    sub.err = "unexpected text after the expression";
                    rc = -1;
                }
            }
            if (rc < 0)
                mp->err = sub.err;
        }
    } else {
        const char *id = scalar(get(im, mp->vars, name));
        id = id ? id : name;
        size_t k = 0;
        while (k < im->n_models && strcmp(im->names[k], id) != 0)
            k++;
        if (k == im->n_models) {
            mp->err = "names a model the config does not have";
            rc = -1;
        } else {
            unsigned char *set = xcalloc(im->n_models ? im->n_models : 1, 1);
            set[k] = 1;
            sets_add(out, set);
        }
    }
    free(name);
    return rc;
}

/* a & b: every union of one set of each side. */
static int m_term(struct mparse *mp, struct sets *out)
{
    if (m_factor(mp, out) < 0)
        return -1;
    for (;;) {
        skip_ws(mp);
        if (*mp->p != '&')
            return 0;
        mp->p++;
        struct sets right = {0}, both = {0};
        if (m_factor(mp, &right) < 0) {
            sets_free(&right);
            return -1;
        }
        for (size_t i = 0; i < out->n; i++)
            for (size_t j = 0; j < right.n; j++) {
                unsigned char *u = xcalloc(mp->im->n_models ? mp->im->n_models : 1, 1);
                for (size_t k = 0; k < mp->im->n_models; k++)
                    u[k] = out->v[i][k] | right.v[j][k];
                sets_add(&both, u);
            }
        sets_free(out);
        sets_free(&right);
        *out = both;
        if (out->n > 4096) {
            mp->err = "the expression makes more than 4096 sets";
            return -1;
        }
    }
}

/* a | b: the sets of both sides. */
static int m_expr(struct mparse *mp, struct sets *out)
{
    if (m_term(mp, out) < 0)
        return -1;
    for (;;) {
        skip_ws(mp);
        if (*mp->p != '|')
            return 0;
        mp->p++;
        if (m_term(mp, out) < 0)
            return -1;
    }
}

/*
 * llama-swap's matrix: the sets of models that may run together. Two models
 * that share no set become a two-member exclusive group; a model in no set
 * runs alone (excludes every other). A set of three or more allows exactly
 * its combinations in llama-swap; yard's pairs allow every combination whose
 * pairs are allowed, which is said when it makes a difference.
 */
static void put_matrix(struct imp *im, const yaml_node_t *mx)
{
    const yaml_node_t *sets_node = get(im, mx, "sets");
    struct sets all = {0};
    if (!sets_node || sets_node->type != YAML_MAPPING_NODE) {
        note(im, mx, "routing.router.settings.matrix", "no sets: every model runs alone");
    } else {
        for (yaml_node_pair_t *p = sets_node->data.mapping.pairs.start;
             p < sets_node->data.mapping.pairs.top; p++) {
            const char *sname = scalar(node(im, p->key));
            const char *expr = scalar(node(im, p->value));
            char key[300];
            snprintf(key, sizeof key, "routing.router.settings.matrix.sets.%s",
                     sname ? sname : "?");
            if (!expr) {
                note(im, node(im, p->value), key, "not an expression; left out");
                continue;
            }
            struct mparse mp = {
                .im = im, .sets_node = sets_node, .vars = get(im, mx, "vars"), .p = expr};
            struct sets got = {0};
            int rc = m_expr(&mp, &got);
            skip_ws(&mp);
            if (rc == 0 && *mp.p) {
                mp.err = "unexpected text after the expression";
                rc = -1;
            }
            if (rc < 0) {
                note(im, node(im, p->value), key, "'%s': %s; the set is left out", expr, mp.err);
                sets_free(&got);
                continue;
            }
            for (size_t i = 0; i < got.n; i++)
                sets_add(&all, got.v[i]);
            free(got.v);
        }
    }
    if (get(im, mx, "evict_costs"))
        note(im, get(im, mx, "evict_costs"), "routing.router.settings.matrix.evict_costs",
             "not translated: yard picks what to evict by its own measured switch costs and "
             "eviction policies");
    size_t n = im->n_models;
    unsigned char *ok = xcalloc(n * n + 1, 1); /* ok[a*n+b]: a and b share a set */
    for (size_t s = 0; s < all.n; s++)
        for (size_t a = 0; a < n; a++)
            for (size_t b = 0; b < n; b++)
                if (all.v[s][a] && all.v[s][b])
                    ok[a * n + b] = 1;
    int first = 1, wider = 0;
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n; b++) {
            if (!im->yard[a] || !im->yard[b])
                continue;
            if (ok[a * n + b]) {
                /* A third model allowed with both, but never with both at once? */
                for (size_t c = b + 1; c < n && !wider; c++) {
                    if (!im->yard[c] || !ok[a * n + c] || !ok[b * n + c])
                        continue;
                    int together = 0;
                    for (size_t s = 0; s < all.n && !together; s++)
                        together = all.v[s][a] && all.v[s][b] && all.v[s][c];
                    wider = !together;
                }
                continue;
            }
            char *pair[2] = {im->yard[a], im->yard[b]};
            char *gname = xstrfmt("%s+%s", pair[0], pair[1]);
            put_group(im, gname, pair, 2, &first);
            free(gname);
        }
    if (wider)
        note(im, mx, "routing.router.settings.matrix",
             "yard's groups are pairs: models allowed two by two run together even where no "
             "set holds all of them");
    free(ok);
    sets_free(&all);
}

static const char *const top_not_translated[][2] = {
    {"logLevel", "yard logs at info; yard events and yard logs show more"},
    {"logTimeFormat", "yard's log lines carry UTC timestamps"},
    {"logToStdout", "yard serve logs to stderr; engines' output is in yard logs MODEL"},
    {"metricsMaxInMemory", "yard keeps events in its database (events.keep)"},
    {"captureBuffer", "yard does not capture requests"},
    {"ui", "yard's dashboard has no settings"},
    {"performance", "not applicable"},
    {"sendLoadingState", "yard sends load progress as SSE comments to waiting streams"},
    {"includeAliasesInList", "yard lists aliases in /v1/models always"},
    {"upstream", "yard forwards every /upstream/MODEL/... path"},
    {"profiles", "yard has no profiles"},
    {"selectors", "yard has no selectors; replicas and hosts lists cover spillover"},
    {"hooks", "yard has no startup preload; 'yard start MODEL' after 'yard serve' does it"},
    {"peers", "yard does not proxy to other OpenAI APIs; a remote machine is a pod"},
};

int config_import_llamaswap(const char *text, size_t len, const char *file, struct buf *out,
                            struct buf *notes, char **err)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    *err = NULL;
    if (!yaml_parser_initialize(&parser)) {
        *err = xstrdup("cannot start the YAML parser (out of memory)");
        return -ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        *err =
            xstrfmt("%s:%zu:%zu: not YAML: %s", file, parser.problem_mark.line + 1,
                    parser.problem_mark.column + 1, parser.problem ? parser.problem : "unreadable");
        yaml_parser_delete(&parser);
        return -EINVAL;
    }
    yaml_parser_delete(&parser);
    struct imp im = {.doc = &doc, .file = file, .out = out, .notes = notes};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    const yaml_node_t *models = get(&im, root, "models");
    int rc = 0;
    if (!root || root->type != YAML_MAPPING_NODE || !models || models->type != YAML_MAPPING_NODE) {
        *err = xstrfmt("%s: not a llama-swap config: it needs a 'models' mapping", file);
        rc = -EINVAL;
        goto done;
    }
    im.macros = read_macros(&im, get(&im, root, "macros"), &im.n_macros, "macros");

    buf_printf(out, "# Translated from llama-swap's %s by 'yard import llama-swap'.\n", file);
    buf_appends(out, "# llama-swap listened where its --listen said; yard listens on 'listen'.\n");
    const yaml_node_t *sp = get(&im, root, "startPort");
    if (sp) {
        long v = seconds_of(sp);
        if (v > 0 && v < 65536)
            buf_printf(out, "start_port: %ld\n", v);
        else
            note(&im, sp, "startPort", "not a port; left out");
    }
    const yaml_node_t *keys = get(&im, root, "apiKeys");
    if (keys && keys->type == YAML_SEQUENCE_NODE &&
        keys->data.sequence.items.top > keys->data.sequence.items.start) {
        buf_appends(out, "api_keys: [");
        for (yaml_node_item_t *it = keys->data.sequence.items.start;
             it < keys->data.sequence.items.top; it++) {
            char *k = expand(scalar(node(&im, *it)) ? scalar(node(&im, *it)) : "", im.macros,
                             im.n_macros);
            if (strstr(k, "${env."))
                note(&im, node(&im, *it), "apiKeys",
                     "'%s' is read from the environment by llama-swap; yard's api_keys are "
                     "literal: write the key itself",
                     k);
            buf_appends(out, it == keys->data.sequence.items.start ? "" : ", ");
            put_str(out, k);
            free(k);
        }
        buf_appends(out, "]\n");
    }
    const yaml_node_t *hct = get(&im, root, "healthCheckTimeout");
    const yaml_node_t *ttl = get(&im, root, "globalTTL");
    const yaml_node_t *unl = get(&im, root, "unloadTimeout");
    if (hct || ttl || unl) {
        buf_appends(out, "defaults:\n");
        if (hct && seconds_of(hct) > 0)
            buf_printf(out, "  startup_timeout: %lds\n", seconds_of(hct));
        if (ttl && seconds_of(ttl) > 0)
            buf_printf(out, "  ttl: %lds\n", seconds_of(ttl));
        if (unl && seconds_of(unl) > 0)
            buf_printf(out, "  stop_timeout: %lds\n", seconds_of(unl));
    }
    for (size_t k = 0; k < sizeof top_not_translated / sizeof top_not_translated[0]; k++) {
        const yaml_node_t *v = get(&im, root, top_not_translated[k][0]);
        if (v)
            note(&im, v, top_not_translated[k][0], "not translated: %s", top_not_translated[k][1]);
    }
    static const char *const top_known[] = {
        "models",    "macros",        "startPort", "apiKeys", "healthCheckTimeout",
        "globalTTL", "unloadTimeout", "groups",    "routing"};
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        const char *k = scalar(node(&im, p->key));
        int seen = 0;
        for (size_t i = 0; k && i < sizeof top_known / sizeof top_known[0]; i++)
            seen |= strcmp(k, top_known[i]) == 0;
        for (size_t i = 0; k && i < sizeof top_not_translated / sizeof top_not_translated[0]; i++)
            seen |= strcmp(k, top_not_translated[i][0]) == 0;
        if (!seen)
            note(&im, node(&im, p->key), k ? k : "?", "not a key of llama-swap's config; left out");
    }

    /* Names first: groups name models, and a renamed model is renamed everywhere. */
    size_t cap = (size_t)(models->data.mapping.pairs.top - models->data.mapping.pairs.start);
    im.names = xcalloc(cap ? cap : 1, sizeof *im.names);
    im.yard = xcalloc(cap ? cap : 1, sizeof *im.yard);
    for (yaml_node_pair_t *p = models->data.mapping.pairs.start; p < models->data.mapping.pairs.top;
         p++) {
        const char *id = scalar(node(&im, p->key));
        if (!id)
            continue;
        im.names[im.n_models] = (char *)id;
        im.yard[im.n_models] = config_name_from(id, strlen(id));
        if (!im.yard[im.n_models])
            note(&im, node(&im, p->key), "models", "'%s' has no usable name; left out", id);
        im.n_models++;
    }
    buf_appends(out, "models:\n");
    size_t i = 0;
    for (yaml_node_pair_t *p = models->data.mapping.pairs.start; p < models->data.mapping.pairs.top;
         p++) {
        if (!scalar(node(&im, p->key)))
            continue;
        if (im.yard[i])
            model_entry(&im, i, node(&im, p->value));
        i++;
    }

    const yaml_node_t *routing = get(&im, root, "routing");
    const yaml_node_t *router = get(&im, routing, "router");
    const char *use = scalar(get(&im, router, "use"));
    const yaml_node_t *settings = get(&im, router, "settings");
    if (get(&im, routing, "scheduler"))
        note(&im, get(&im, routing, "scheduler"), "routing.scheduler",
             "yard's queue is fifo by default; priorities are not translated");
    if (use && strcmp(use, "matrix") == 0) {
        put_matrix(&im, get(&im, settings, "matrix"));
        if (get(&im, settings, "groups") || get(&im, root, "groups"))
            note(&im, settings, "routing.router.settings.groups",
                 "llama-swap uses the matrix, not the groups, with use: matrix; left out");
    } else {
        struct lgroup *g = NULL;
        size_t ng = 0;
        read_groups(&im, get(&im, root, "groups"), "groups", &g, &ng);
        read_groups(&im, get(&im, settings, "groups"), "routing.router.settings.groups", &g, &ng);
        put_groups(&im, g, ng);
    }
done:
    for (size_t k = 0; k < im.n_models; k++)
        free(im.yard[k]);
    free(im.yard);
    free(im.names);
    free(im.grouped);
    free_macros(im.macros, im.n_macros);
    yaml_document_delete(&doc);
    return rc;
}
