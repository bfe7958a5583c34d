/*
 * The `clouds:` section: GPU marketplaces yard rents machines from
 * (docs/cloud.md). Each cloud's name is a host name models list in `hosts:`
 * or `pod:`, so it follows the pod rule and may not be `local` nor a pod of
 * `pods:`. Its keys, their defaults and checks, the typed filters sent to the
 * marketplace's search, and the API key's ${env.VAR} expansion at use.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/units.h"
#include "config/internal.h"

#define CLOUD_URL_DEFAULT "https://console.vast.ai"
#define CLOUD_DISK_DEFAULT (60ull << 30)
#define CLOUD_IDLE_DEFAULT_MS (30ull * 60 * 1000)
#define CLOUD_RUNNING_DEFAULT_MS (15ull * 60 * 1000) /* an image pull may take minutes */
#define CLOUD_SSH_DEFAULT_MS (5ull * 60 * 1000)
#define CLOUD_SETUP_DEFAULT_MS (60ull * 60 * 1000) /* an install may take long */
#define CLOUD_MAX_PRICE 1000.0 /* $/hour: a guard against a typo, not a market limit */

enum {
    CK_PROVIDER,
    CK_API_KEY,
    CK_URL,
    CK_STRICTNESS,
    CK_MAX_PRICE,
    CK_MAX_MACHINES,
    CK_MAX_TRIES,
    CK_IMAGE,
    CK_DISK,
    CK_SSH_KEY,
    CK_SETUP,
    CK_FILTERS,
    CK_IDLE_RELEASE,
    CK_RELEASE_ON_EXIT,
    CK_DEADLINES,
    CK_BAD_HOST_TTL,
    CK_COUNT,
};

static const char *const cloud_keys[] = {
    "provider",     "api_key",         "url",       "strictness",   "max_price", "max_machines",
    "max_tries",    "image",           "disk",      "ssh_key",      "setup",     "filters",
    "idle_release", "release_on_exit", "deadlines", "bad_host_ttl", NULL,
};

/* The steps of deadlines:, in the order a machine goes through them. */
static const char *const deadline_steps[] = {"running", "ssh", "setup", "ready", NULL};

static const char *const strictness_names[] = {"strict", "balanced", "aggressive"};
static const char *const providers[] = {"vast"};
static const char *const filter_ops[] = {"eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"};

const char *config_strictness_name(enum config_strictness s)
{
    return (unsigned)s < 3 ? strictness_names[s] : "?";
}

/* ---- api_key -------------------------------------------------------- */

static int env_name_char(char c, int first)
{
    return isalpha((unsigned char)c) || c == '_' || (!first && isdigit((unsigned char)c));
}

/*
 * Walks the ${...} macros of an api_key. For each, calls fn with the
 * variable's name (name, len) when it is ${env.NAME}; returns -EINVAL with
 * *bad at the macro's '$' for anything else. fn returning nonzero stops the
 * walk with that value. Text outside macros is literal.
 */
static int key_macros(const char *s, const char **bad,
                      int (*fn)(void *arg, const char *lit, size_t lit_len, const char *name,
                                size_t len),
                      void *arg)
{
    const char *lit = s;
    for (const char *p = s; *p;) {
        if (p[0] != '$' || p[1] != '{') {
            p++;
            continue;
        }
        const char *end = strchr(p, '}');
        const char *name = p + 6;
        size_t len = end ? (size_t)(end - name) : 0;
        int ok = end && !strncmp(p + 2, "env.", 4) && len > 0;
        for (size_t i = 0; ok && i < len; i++)
            ok = env_name_char(name[i], i == 0);
        if (!ok) {
            *bad = p;
            return -EINVAL;
        }
        int rc = fn ? fn(arg, lit, (size_t)(p - lit), name, len) : 0;
        if (rc)
            return rc;
        p = lit = end + 1;
    }
    return fn ? fn(arg, lit, strlen(lit), NULL, 0) : 0;
}

struct key_expand {
    char *out;
    size_t len, cap;
    char *err;
    size_t errlen;
    const char *cloud;
};

static int key_append(struct key_expand *k, const char *s, size_t n)
{
    if (k->len + n + 1 > k->cap) {
        size_t cap = (k->len + n + 1) * 2;
        char *p = realloc(k->out, cap);
        if (!p) {
            snprintf(k->err, k->errlen, "out of memory expanding clouds.%s.api_key", k->cloud);
            return -ENOMEM;
        }
        k->out = p;
        k->cap = cap;
    }
    memcpy(k->out + k->len, s, n);
    k->len += n;
    k->out[k->len] = '\0';
    return 0;
}

static int key_part(void *arg, const char *lit, size_t lit_len, const char *name, size_t len)
{
    struct key_expand *k = arg;
    if (key_append(k, lit, lit_len) < 0)
        return -ENOMEM;
    if (!name)
        return 0;
    char var[256];
    snprintf(var, sizeof var, "%.*s", (int)len, name);
    const char *v = getenv(var);
    if (!v || !*v) {
        snprintf(k->err, k->errlen,
                 "environment variable '%s' is %s (used in clouds.%s.api_key); set it in the "
                 "daemon's environment and restart it",
                 var, v ? "empty" : "not set", k->cloud);
        return -ENOENT;
    }
    return key_append(k, v, strlen(v));
}

char *config_cloud_api_key(const struct config_cloud *c, char *err, size_t errlen)
{
    struct key_expand k = {.err = err, .errlen = errlen, .cloud = c->name};
    const char *bad = NULL;
    int rc = key_macros(c->api_key, &bad, key_part, &k);
    if (rc == -EINVAL)
        snprintf(err, errlen, "clouds.%s.api_key: only ${env.VAR} is expanded", c->name);
    if (rc == 0 && (!k.out || !*k.out)) {
        snprintf(err, errlen, "clouds.%s.api_key is empty", c->name);
        rc = -EINVAL;
    }
    if (rc < 0) {
        free(k.out);
        return NULL;
    }
    return k.out;
}

/* ---- keys ----------------------------------------------------------- */

/* Whether host (len bytes) is a loopback name, where plain http carries no key off the machine. */
static int loopback_host(const char *host, size_t len)
{
    if ((len == 9 && !strncmp(host, "localhost", 9)) || (len == 5 && !strncmp(host, "[::1]", 5)))
        return 1;
    if (len < 4 || strncmp(host, "127.", 4))
        return 0;
    for (size_t i = 4; i < len; i++)
        if (!isdigit((unsigned char)host[i]) && host[i] != '.')
            return 0;
    return 1;
}

static void parse_url(struct config__walk *w, struct config_cloud *c, const yaml_node_t *n,
                      const char *path)
{
    const char *s = config__want_scalar(w, n, path);
    if (!s)
        return;
    int https = !strncmp(s, "https://", 8);
    int http = !strncmp(s, "http://", 7);
    const char *host = s + (https ? 8 : 7);
    size_t host_len = strcspn(host, "/?#");
    size_t port_at = strcspn(host, ":/?#");
    int bad_char = 0;
    for (const char *p = s; *p; p++)
        bad_char |= (unsigned char)*p <= ' ' || *p == 0x7f || *p == '?' || *p == '#';
    if ((!https && !http) || host_len == 0 || port_at == 0 || bad_char) {
        config__err_at(w, n,
                       "%s: '%s' is not an API address; give its base URL, as "
                       "'" CLOUD_URL_DEFAULT "'",
                       path, s);
        return;
    }
    if (http && !loopback_host(host, port_at < host_len ? port_at : host_len)) {
        config__err_at(w, n,
                       "%s: 'http://' would send the API key unencrypted; use https:// (plain "
                       "http is taken for a loopback address only, as a test stand-in's)",
                       path);
        return;
    }
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '/')
        len--;
    free(c->url);
    c->url = config__strndup(w, s, len);
}

/* "~/x" from $HOME, relative paths beside the config; NULL (reported) when HOME is unset. */
static char *key_path(struct config__walk *w, const yaml_node_t *n, const char *path, const char *s)
{
    if (s[0] == '~' && s[1] == '/') {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            config__err_at(w, n, "%s: '~' needs $HOME, which is not set; give an absolute path",
                           path);
            return NULL;
        }
        return config__strfmt(w, "%s%s", home, s + 1);
    }
    return config__beside_config(w, s);
}

static int readable(struct config__walk *w, const yaml_node_t *n, const char *path,
                    const char *file, const char *what)
{
    if (access(file, R_OK) == 0)
        return 1;
    char why[128];
    snprintf(why, sizeof why, "%s", strerror(errno));
    why[0] = (char)tolower((unsigned char)why[0]);
    config__err_at(w, n, "%s: cannot read '%s': %s; %s", path, file, why, what);
    return 0;
}

static void parse_ssh_key(struct config__walk *w, struct config_cloud *c, const yaml_node_t *n,
                          const char *path)
{
    const char *s = config__want_scalar(w, n, path);
    if (!s)
        return;
    if (!*s) {
        config__err_at(w, n, "%s: empty path; give the private key yard logs in with", path);
        return;
    }
    char *file = key_path(w, n, path, s);
    char *pub = file ? config__strfmt(w, "%s.pub", file) : NULL;
    if (!pub) {
        free(file);
        return;
    }
    if (readable(w, n, path, file,
                 "give the private key yard logs in with (make one with ssh-keygen -t ed25519 "
                 "-f PATH)") &&
        readable(w, n, path, pub,
                 "the public key goes to the machine; write it with ssh-keygen -y -f KEY > "
                 "KEY.pub"))
        c->ssh_key = file, file = NULL;
    free(file);
    free(pub);
}

/* A plain scalar that reads as a JSON number: -?D+(.D+)?([eE][+-]?D+)? */
static int number_text(const char *s)
{
    const char *p = s + (*s == '-');
    if (!isdigit((unsigned char)*p))
        return 0;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        if (!isdigit((unsigned char)*++p))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return *p == '\0';
}

static int one_of(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (!strcmp(s, *words))
            return 1;
    return 0;
}

/* Types one scalar of a filter as YAML wrote it: a quoted scalar is always text. */
static int read_value(struct config__walk *w, const yaml_node_t *n, const char *path,
                      const char *field, struct config_value *v)
{
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    if (n->type != YAML_SCALAR_NODE) {
        config__err_type(w, n, path, "a value (a number, a string, true or false)");
        return -1;
    }
    const char *s = config__scalar(n);
    int plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    v->type = CONFIG_VALUE_STRING;
    if (plain && number_text(s)) {
        v->type = CONFIG_VALUE_NUMBER;
        v->number = strtod(s, NULL);
    } else if (plain && (one_of(s, trues) || one_of(s, falses))) {
        v->type = CONFIG_VALUE_BOOL;
        v->boolean = one_of(s, trues);
    } else if (plain && one_of(s, nulls)) {
        v->type = CONFIG_VALUE_NULL;
    }
    if (v->type == CONFIG_VALUE_STRING && !strcmp(field, "gpu_name") && strchr(s, '_')) {
        config__err_at(w, n,
                       "%s: '%s' has '_' where the marketplace's GPU names have spaces; write "
                       "it as the offers show it, as 'RTX 4090'",
                       path, s);
        return -1;
    }
    if (!strcmp(field, "geolocation") &&
        (v->type != CONFIG_VALUE_STRING || strlen(s) != 2 || !isupper((unsigned char)s[0]) ||
         !isupper((unsigned char)s[1]))) {
        config__err_at(w, n,
                       "%s: '%s' is not a country; geolocation filters take two-letter "
                       "country codes, as US or DE",
                       path, s);
        return -1;
    }
    v->text = config__strdup(w, s);
    return v->text ? 0 : -1;
}

/* Fields yard sets itself, and what to write instead. */
static const char *reserved_field(const char *f)
{
    if (!strcmp(f, "num_gpus") || !strcmp(f, "gpu_ram") || !strcmp(f, "gpu_total_ram"))
        return "yard sets it from the model's 'gpus' and 'vram' (or 'yard cloud offers --gpus "
               "--vram'); remove it here";
    if (!strcmp(f, "dph_total") || !strcmp(f, "dph"))
        return "the price limit is 'max_price'; remove it here";
    if (!strcmp(f, "machine_id"))
        return "yard excludes machines itself (its bad-host list); remove it here";
    if (!strcmp(f, "rentable") || !strcmp(f, "rented") || !strcmp(f, "external"))
        return "yard always asks for rentable, unrented offers of the marketplace itself; remove "
               "it here";
    if (!strcmp(f, "order") || !strcmp(f, "type") || !strcmp(f, "limit") ||
        !strcmp(f, "allocated_storage") || !strcmp(f, "disable_bundling"))
        return "it is not a filter of offers; yard sets it (allocated_storage from 'disk')";
    return NULL;
}

static int field_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > 64 || !islower((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

/* Adds one filter; op is one of filter_ops, n its value (a list for in/notin). */
static void add_filter(struct config__walk *w, struct config_cloud *c, const char *field,
                       const char *op, const yaml_node_t *n, const char *path)
{
    int list = !strcmp(op, "in") || !strcmp(op, "notin");
    if (list != (n->type == YAML_SEQUENCE_NODE)) {
        config__err_type(w, n, path, list ? "a list" : "one value");
        return;
    }
    size_t count = list ? (size_t)(n->data.sequence.items.top - n->data.sequence.items.start) : 1;
    if (list && count == 0) {
        config__err_at(w, n, "%s: the list is empty; give at least one value", path);
        return;
    }
    struct config_cloud_filter *f = &c->filters[c->n_filters];
    f->values = config__calloc(w, count, sizeof *f->values);
    f->field = config__strdup(w, field);
    f->op = config__strdup(w, op);
    if (!f->values || !f->field || !f->op) {
        free(f->values);
        free(f->field);
        free(f->op);
        *f = (struct config_cloud_filter){0};
        return;
    }
    f->is_list = list;
    c->n_filters++;
    for (size_t i = 0; i < count; i++) {
        const yaml_node_t *item =
            list ? config__node(w, n->data.sequence.items.start[i]) : (const yaml_node_t *)n;
        if (read_value(w, item, path, field, &f->values[f->n_values]) == 0)
            f->n_values++;
    }
}

static void parse_filters(struct config__walk *w, struct config_cloud *c, const yaml_node_t *n,
                          const char *path)
{
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, path, "a mapping of offer fields, as { gpu_name: \"RTX 4090\" }");
        return;
    }
    /* At most one filter per op of each field. */
    size_t cap = 0;
    for (size_t i = 0; i < config__map_size(n); i++) {
        yaml_node_t *v = config__node(w, n->data.mapping.pairs.start[i].value);
        cap += v->type == YAML_MAPPING_NODE ? config__map_size(v) : 1;
    }
    c->filters = config__calloc(w, cap + 1, sizeof *c->filters);
    char *where = config__strfmt(w, "in '%s'", path);
    size_t *first = config__map_first_keys(w, n);
    for (size_t i = 0; c->filters && where && first && i < config__map_size(n); i++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!config__pair_ok(w, n, first, i, where))
            continue;
        yaml_node_t *k = config__node(w, p->key), *v = config__node(w, p->value);
        const char *field = config__scalar(k);
        if (config__has_nul(k))
            continue;
        char *fpath = config__strfmt(w, "%s.%s", path, field);
        if (!fpath)
            break;
        const char *why = reserved_field(field);
        if (!field_name_ok(field, config__scalar_len(k)))
            config__err_at(w, k,
                           "%s: '%s' is not an offer field; fields are lowercase words with "
                           "'_', as gpu_name or reliability2",
                           path, field);
        else if (why)
            config__err_at(w, k, "%s: %s", fpath, why);
        else if (v->type == YAML_SEQUENCE_NODE)
            add_filter(w, c, field, "in", v, fpath);
        else if (v->type != YAML_MAPPING_NODE)
            add_filter(w, c, field, "eq", v, fpath);
        else {
            yaml_node_t *ops[9];
            char *owhere = config__strfmt(w, "in '%s'", fpath);
            static const char *const op_keys[] = {"eq",  "neq", "gt",    "gte", "lt",
                                                  "lte", "in",  "notin", NULL};
            if (owhere && config__walk_map(w, v, fpath, owhere, op_keys, ops) == 0)
                for (size_t o = 0; o < sizeof filter_ops / sizeof filter_ops[0]; o++) {
                    if (!ops[o])
                        continue;
                    char *opath = config__strfmt(w, "%s.%s", fpath, filter_ops[o]);
                    if (opath)
                        add_filter(w, c, field, filter_ops[o], ops[o], opath);
                    free(opath);
                }
            if (owhere && !config__map_size(v))
                config__err_at(w, v,
                               "%s: no operator; give one of eq, neq, gt, gte, lt, lte, "
                               "in or notin",
                               fpath);
            free(owhere);
        }
        free(fpath);
    }
    free(first);
    free(where);
}

/* deadlines: { STEP: DURATION }, each step one of deadline_steps. */
static void parse_deadlines(struct config__walk *w, struct config_cloud *c, const yaml_node_t *n,
                            const char *path)
{
    static const char *const examples[] = {"15m", "5m", "1h", "30m"};
    uint64_t *slot[] = {&c->deadline_running_ms, &c->deadline_ssh_ms, &c->deadline_setup_ms,
                        &c->deadline_ready_ms};
    yaml_node_t *v[sizeof slot / sizeof slot[0]];
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, path, "a mapping of steps, as { running: 15m, ssh: 5m }");
        return;
    }
    char *where = config__strfmt(w, "in '%s'", path);
    if (!where || config__walk_map(w, n, path, where, deadline_steps, v) < 0) {
        free(where);
        return;
    }
    free(where);
    for (size_t i = 0; deadline_steps[i]; i++) {
        if (!config__present(v[i]))
            continue;
        char *p = config__strfmt(w, "%s.%s", path, deadline_steps[i]);
        if (!p)
            return;
        uint64_t ms = UINT64_MAX;
        config__get_duration(w, v[i], p, &ms);
        if (ms != UINT64_MAX && ms < 1000)
            config__err_at(w, v[i], "%s: '%s' is too short; use at least 1s, as '%s'", p,
                           config__scalar(v[i]), examples[i]);
        else if (ms != UINT64_MAX)
            *slot[i] = ms;
        free(p);
    }
}

/* bad_host_ttl: a duration of at least 1s, or never (kept until forgotten by hand). */
static void parse_bad_host_ttl(struct config__walk *w, struct config_cloud *c, const yaml_node_t *n,
                               const char *path)
{
    const char *s = config__scalar(n);
    if (s && n->type == YAML_SCALAR_NODE && !strcmp(s, "never")) {
        c->bad_host_ttl_ms = 0;
        return;
    }
    uint64_t ms = 0;
    if (!s || n->type != YAML_SCALAR_NODE || units_parse_duration(s, &ms) < 0) {
        config__get_duration(w, n, path, &ms); /* says what is wrong */
        return;
    }
    if (ms < 1000)
        config__err_at(w, n,
                       "%s: '%s' is too short; use at least 1s, as '7d', or 'never' to keep "
                       "bad hosts until 'yard cloud bad --forget'",
                       path, s);
    else
        c->bad_host_ttl_ms = ms;
}

static void parse_cloud(struct config__walk *w, struct config_cloud *c, const yaml_node_t *key,
                        const yaml_node_t *body)
{
    yaml_node_t *v[CK_COUNT];
    char *path = config__strfmt(w, "clouds.%s", c->name);
    char *where = config__strfmt(w, "in cloud '%s'", c->name);
    char *p = NULL;
    c->url = config__strdup(w, CLOUD_URL_DEFAULT);
    c->strictness = CONFIG_STRICTNESS_BALANCED;
    c->max_machines = 1;
    c->max_tries = 5;
    c->disk = CLOUD_DISK_DEFAULT;
    c->idle_release_ms = CLOUD_IDLE_DEFAULT_MS;
    c->deadline_running_ms = CLOUD_RUNNING_DEFAULT_MS;
    c->deadline_ssh_ms = CLOUD_SSH_DEFAULT_MS;
    c->deadline_setup_ms = CLOUD_SETUP_DEFAULT_MS;
    c->bad_host_ttl_ms = CONFIG_CLOUD_BAD_HOST_TTL_DEFAULT_MS;
    if (!path || !where || config__walk_map(w, body, path, where, cloud_keys, v) < 0)
        goto out;
#define KEY(k) (free(p), p = config__strfmt(w, "%s.%s", path, cloud_keys[k]), p)
#define MISSING(k, what) config__err_at(w, key, "%s: missing '%s'; %s", path, cloud_keys[k], what)

    if (!config__present(v[CK_PROVIDER]))
        MISSING(CK_PROVIDER, "give the marketplace, as 'provider: vast'");
    else if (KEY(CK_PROVIDER) &&
             config__get_enum(w, v[CK_PROVIDER], p, "provider", providers, 1) >= 0)
        c->provider = config__strdup(w, config__scalar(v[CK_PROVIDER]));

    if (!config__present(v[CK_API_KEY])) {
        MISSING(CK_API_KEY, "give the marketplace's key, as 'api_key: ${env.VAST_API_KEY}'");
    } else if (KEY(CK_API_KEY)) {
        config__get_str(w, v[CK_API_KEY], p, &c->api_key);
        const char *bad = NULL;
        if (c->api_key && !*c->api_key)
            config__err_at(w, v[CK_API_KEY], "%s: empty key; give it, as ${env.VAST_API_KEY}", p);
        else if (c->api_key && key_macros(c->api_key, &bad, NULL, NULL) < 0)
            config__err_at(w, v[CK_API_KEY],
                           "%s: '%.*s' is not a macro this key takes; write ${env.VAR} to read "
                           "the key from the daemon's environment",
                           p, (int)(strchr(bad, '}') ? strchr(bad, '}') - bad + 1 : 2), bad);
    }

    if (config__present(v[CK_URL]) && KEY(CK_URL))
        parse_url(w, c, v[CK_URL], p);

    int i;
    if (config__present(v[CK_STRICTNESS]) && KEY(CK_STRICTNESS) &&
        (i = config__get_enum(w, v[CK_STRICTNESS], p, "strictness", strictness_names, 3)) >= 0)
        c->strictness = (enum config_strictness)i;

    if (!config__present(v[CK_MAX_PRICE]))
        MISSING(CK_MAX_PRICE, "give the most yard may pay per machine, in $/hour, as "
                              "'max_price: 1.50'");
    else if (KEY(CK_MAX_PRICE)) {
        double price = NAN;
        config__get_number(w, v[CK_MAX_PRICE], p, -HUGE_VAL, HUGE_VAL, &price);
        if (price > 0 && price <= CLOUD_MAX_PRICE)
            c->max_price = price;
        else if (!isnan(price))
            config__err_at(w, v[CK_MAX_PRICE],
                           "%s: %s is out of range; give $/hour, more than 0 and at most %g", p,
                           config__scalar(v[CK_MAX_PRICE]), CLOUD_MAX_PRICE);
    }

    if (config__present(v[CK_MAX_MACHINES]) && KEY(CK_MAX_MACHINES))
        config__get_int(w, v[CK_MAX_MACHINES], p, 1, 1000, &c->max_machines);
    if (config__present(v[CK_MAX_TRIES]) && KEY(CK_MAX_TRIES))
        config__get_int(w, v[CK_MAX_TRIES], p, 1, 100, &c->max_tries);

    if (!config__present(v[CK_IMAGE])) {
        MISSING(CK_IMAGE, "give the container image machines run, as "
                          "'image: vllm/vllm-openai:latest'");
    } else if (KEY(CK_IMAGE)) {
        config__get_str(w, v[CK_IMAGE], p, &c->image);
        if (c->image && (!*c->image || strpbrk(c->image, " \t\n")))
            config__err_at(w, v[CK_IMAGE],
                           "%s: '%s' is not an image name; give one as "
                           "'vllm/vllm-openai:latest'",
                           p, c->image);
    }

    if (config__present(v[CK_DISK]) && KEY(CK_DISK)) {
        config__get_size(w, v[CK_DISK], p, &c->disk);
        if (c->disk < (1ull << 30) || c->disk > (64ull << 40))
            config__err_at(w, v[CK_DISK], "%s: '%s' is out of range; use 1GiB to 64TiB", p,
                           config__scalar(v[CK_DISK]));
    }

    if (!config__present(v[CK_SSH_KEY]))
        MISSING(CK_SSH_KEY, "give the private key yard logs in to machines with, as "
                            "'ssh_key: ~/.ssh/id_ed25519' (its .pub goes to the machine)");
    else if (KEY(CK_SSH_KEY))
        parse_ssh_key(w, c, v[CK_SSH_KEY], p);

    if (config__present(v[CK_SETUP]) && KEY(CK_SETUP)) {
        config__get_str(w, v[CK_SETUP], p, &c->setup);
        if (c->setup && !*c->setup)
            config__err_at(w, v[CK_SETUP],
                           "%s: empty script; write the commands or leave the "
                           "key out",
                           p);
    }
    if (config__present(v[CK_FILTERS]) && KEY(CK_FILTERS))
        parse_filters(w, c, v[CK_FILTERS], p);
    if (config__present(v[CK_IDLE_RELEASE]) && KEY(CK_IDLE_RELEASE)) {
        config__get_duration(w, v[CK_IDLE_RELEASE], p, &c->idle_release_ms);
        if (c->idle_release_ms < 1000)
            config__err_at(w, v[CK_IDLE_RELEASE],
                           "%s: '%s' is too short; use at least 1s, as "
                           "'30m'",
                           p, config__scalar(v[CK_IDLE_RELEASE]));
    }
    if (config__present(v[CK_RELEASE_ON_EXIT]) && KEY(CK_RELEASE_ON_EXIT))
        config__get_bool(w, v[CK_RELEASE_ON_EXIT], p, &c->release_on_exit);
    if (config__present(v[CK_DEADLINES]) && KEY(CK_DEADLINES))
        parse_deadlines(w, c, v[CK_DEADLINES], p);
    if (config__present(v[CK_BAD_HOST_TTL]) && KEY(CK_BAD_HOST_TTL))
        parse_bad_host_ttl(w, c, v[CK_BAD_HOST_TTL], p);
#undef MISSING
#undef KEY
out:
    free(p);
    free(where);
    free(path);
}

void config__parse_clouds(struct config__walk *w, const yaml_node_t *n)
{
    struct config *cfg = w->cfg;
    if (n->type != YAML_MAPPING_NODE) {
        config__err_type(w, n, "clouds", "a mapping of cloud names");
        return;
    }
    cfg->clouds = config__calloc(w, config__map_size(n) + 1, sizeof *cfg->clouds);
    size_t *first = config__map_first_keys(w, n);
    for (size_t i = 0; cfg->clouds && first && i < config__map_size(n); i++) {
        const yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        if (!config__pair_ok(w, n, first, i, "in 'clouds'"))
            continue;
        yaml_node_t *k = config__node(w, p->key);
        const char *name = config__scalar(k);
        if (!config__host_key_ok(w, k, "clouds", "cloud", "one pod or one cloud"))
            continue;
        struct config_cloud *c = &cfg->clouds[cfg->n_clouds];
        c->name = config__strdup(w, name);
        if (!c->name)
            break;
        cfg->n_clouds++;
        c->line = (int)k->start_mark.line + 1;
        c->col = (int)k->start_mark.column + 1;
        parse_cloud(w, c, k, config__node(w, p->value));
    }
    free(first);
}

/* ---- freeing, lookup, comparison ------------------------------------ */

static void filter_release(struct config_cloud_filter *f)
{
    for (size_t i = 0; i < f->n_values; i++)
        free(f->values[i].text);
    free(f->values);
    free(f->field);
    free(f->op);
}

void config__clouds_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_clouds; i++) {
        struct config_cloud *c = &cfg->clouds[i];
        free(c->name);
        free(c->provider);
        free(c->api_key);
        free(c->url);
        free(c->image);
        free(c->ssh_key);
        free(c->setup);
        for (size_t j = 0; j < c->n_filters; j++)
            filter_release(&c->filters[j]);
        free(c->filters);
    }
    free(cfg->clouds);
}

const struct config_cloud *config_find_cloud(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_clouds; i++)
        if (cfg->clouds[i].name && !strcmp(cfg->clouds[i].name, name))
            return &cfg->clouds[i];
    return NULL;
}

static int filter_same(const struct config_cloud_filter *a, const struct config_cloud_filter *b)
{
    if (!config__str_same(a->field, b->field) || !config__str_same(a->op, b->op) ||
        a->n_values != b->n_values)
        return 0;
    for (size_t i = 0; i < a->n_values; i++)
        if (a->values[i].type != b->values[i].type ||
            !config__str_same(a->values[i].text, b->values[i].text))
            return 0;
    return 1;
}

static int cloud_same(const struct config_cloud *a, const struct config_cloud *b)
{
    if (!config__str_same(a->name, b->name) || !config__str_same(a->provider, b->provider) ||
        !config__str_same(a->api_key, b->api_key) || !config__str_same(a->url, b->url) ||
        a->strictness != b->strictness || a->max_price != b->max_price ||
        a->max_machines != b->max_machines || a->max_tries != b->max_tries ||
        !config__str_same(a->image, b->image) || a->disk != b->disk ||
        !config__str_same(a->ssh_key, b->ssh_key) || !config__str_same(a->setup, b->setup) ||
        a->n_filters != b->n_filters || a->idle_release_ms != b->idle_release_ms ||
        a->release_on_exit != b->release_on_exit ||
        a->deadline_running_ms != b->deadline_running_ms ||
        a->deadline_ssh_ms != b->deadline_ssh_ms || a->deadline_setup_ms != b->deadline_setup_ms ||
        a->deadline_ready_ms != b->deadline_ready_ms || a->bad_host_ttl_ms != b->bad_host_ttl_ms)
        return 0;
    for (size_t i = 0; i < a->n_filters; i++)
        if (!filter_same(&a->filters[i], &b->filters[i]))
            return 0;
    return 1;
}

int config__clouds_same(const struct config *a, const struct config *b)
{
    if (a->n_clouds != b->n_clouds)
        return 0;
    for (size_t i = 0; i < a->n_clouds; i++)
        if (!cloud_same(&a->clouds[i], &b->clouds[i]))
            return 0;
    return 1;
}
