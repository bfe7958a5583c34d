/*
 * Command lines of models: shell-like splitting into argv and the expansion
 * of ${...} macros. One tokenizer serves three modes so that splitting,
 * checking at load time and expanding at start time never disagree.
 *
 * Macros are expanded inside a word, after the word boundaries are known, so
 * the value of a macro never splits into several words and never introduces
 * quotes. They are expanded in unquoted and double-quoted text; single-quoted
 * text and "\$" stay literal, as in a shell.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "config/internal.h"

/* One word can be no longer than the config file that holds it. */
#define WORD_MAX (16u << 20)

#define MACRO_HINT                                                                                 \
    "use ${PORT}, ${NAME}, ${MODEL}, ${GPUS}, ${API_KEY} or ${env.VAR}, or define it under "       \
    "'macros:'"

enum tok_mode {
    TOK_SPLIT,  /* "${" is plain text */
    TOK_CHECK,  /* validate macro names, produce nothing */
    TOK_EXPAND, /* substitute macro values */
};

struct tok {
    enum tok_mode mode;
    const struct config_cmd *c; /* TOK_EXPAND only */
    int port;
    const char *gpus;
    char *err;
    size_t errlen;
    struct buf word;
    char **argv;
    size_t argc;
    size_t cap;
    /* TOK_CHECK with ports set: what the command says about its port. */
    struct config__cmd_port *ports;
    char small[64]; /* the current word, when it fits */
    size_t small_len;
    int small_over;  /* the word is longer than small */
    int small_macro; /* a macro is part of the word: not a literal */
    int container;   /* argv[0] is docker, podman or nerdctl */
    int want;        /* the word before asked for a value: WANT_PORT, WANT_PUBLISH */
};

enum { WANT_NONE, WANT_PORT, WANT_PUBLISH };

static int tok_fail(struct tok *t, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int tok_fail(struct tok *t, int rc, const char *fmt, ...)
{
    if (t->err && t->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->err, t->errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int tok_append(struct tok *t, const char *p, size_t n)
{
    if (t->mode == TOK_CHECK) {
        if (t->small_len + n < sizeof t->small) {
            memcpy(t->small + t->small_len, p, n);
            t->small_len += n;
        } else {
            t->small_over = 1;
        }
        return 0;
    }
    int rc = buf_append(&t->word, p, n);
    if (rc < 0)
        return tok_fail(t, rc, "command word too long");
    return 0;
}

static void tok_note_word(struct tok *t);

static void tok_push_word(struct tok *t)
{
    if (t->mode == TOK_CHECK) {
        if (t->ports)
            tok_note_word(t);
        t->argc++;
        t->small_len = 0;
        t->small_over = t->small_macro = 0;
        return;
    }
    if (t->argc + 2 > t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->argv = xrealloc(t->argv, t->cap * sizeof *t->argv);
    }
    t->argv[t->argc++] = xstrndup(t->word.data ? t->word.data : "", t->word.len);
    t->argv[t->argc] = NULL;
    buf_reset(&t->word);
}

static int is_env_name(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

/* The model's own env wins over the daemon's environment. */
static const char *lookup_env(const struct config_cmd *c, const char *name)
{
    for (size_t i = 0; i < c->n_env; i++)
        if (strcmp(c->env[i].key, name) == 0)
            return c->env[i].value;
    return getenv(name);
}

/* n in decimal at the end of buf (16 bytes), without printf: every model's ${PORT} at load. */
static const char *fmt_port(char *buf, int n)
{
    char *s = buf + 15;
    *s = '\0';
    unsigned v = n < 0 ? 0u - (unsigned)n : (unsigned)n;
    do
        *--s = (char)('0' + v % 10);
    while (v /= 10);
    if (n < 0)
        *--s = '-';
    return s;
}

/* p points at "${"; on success *pp is moved past the closing brace. */
static int tok_macro(struct tok *t, const char **pp)
{
    const char *name = *pp + 2;
    const char *close = strchr(name, '}');
    if (!close) {
        int n = (int)strcspn(*pp, " \t\r\n\"'");
        return tok_fail(t, -EINVAL, "unterminated macro '%.*s'; close it with '}'", n, *pp);
    }
    size_t len = (size_t)(close - name);
    const char *val = NULL;
    t->small_macro = 1;
    if (t->ports && len == 4 && memcmp(name, "PORT", 4) == 0)
        t->ports->uses_macro = 1;
    char num[16];
    int known = 1;
    if (len == 4 && memcmp(name, "PORT", 4) == 0) {
        val = fmt_port(num, t->port);
    } else if (len == 4 && memcmp(name, "NAME", 4) == 0) {
        val = t->c ? t->c->name : NULL;
    } else if (len == 5 && memcmp(name, "MODEL", 5) == 0) {
        val = t->c ? (t->c->model_id ? t->c->model_id : t->c->name) : NULL;
    } else if (len == 4 && memcmp(name, "GPUS", 4) == 0) {
        val = t->gpus ? t->gpus : "";
    } else if (len == 7 && memcmp(name, "API_KEY", 7) == 0) {
        /* Left as written: the supervisor puts the engine's key in only after the
         * command line was recorded and shown (sup/key.c). */
        val = "${API_KEY}";
    } else if (len > 4 && memcmp(name, "env.", 4) == 0 && is_env_name(name + 4, len - 4)) {
        if (t->mode == TOK_EXPAND) {
            char *var = xstrndup(name + 4, len - 4);
            val = lookup_env(t->c, var);
            if (!val) {
                tok_fail(t, -ENOENT,
                         "environment variable '%s' is not set (used in model '%s' cmd)", var,
                         t->c->name);
                free(var);
                return -ENOENT;
            }
            free(var);
        }
    } else {
        known = 0;
    }
    if (!known) {
        if (t->mode == TOK_EXPAND)
            return tok_fail(t, -EINVAL, "unknown macro '${%.*s}' in model '%s' cmd; " MACRO_HINT,
                            (int)len, name, t->c->name);
        return tok_fail(t, -EINVAL, "unknown macro '${%.*s}'; " MACRO_HINT, (int)len, name);
    }
    *pp = close + 1;
    return val ? tok_append(t, val, strlen(val)) : 0;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* What ends a run of plain characters in a word: the end, a blank, a quote, '\\', '$'. */
static const unsigned char tok_special[256] = {
    ['\0'] = 1, [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1,
    ['\''] = 1, ['"'] = 1, ['\\'] = 1, ['$'] = 1,
};

static int tok_run(struct tok *t, const char *cmd)
{
    const char *p = cmd;
    int rc;
    for (;;) {
        /* Whitespace and backslash-newline continuations separate words. */
        while (is_blank(*p) || (p[0] == '\\' && p[1] == '\n'))
            p += is_blank(*p) ? 1 : 2;
        if (!*p)
            break;
        while (*p && !is_blank(*p)) {
            if (*p == '\'') {
                const char *end = strchr(p + 1, '\'');
                if (!end)
                    return tok_fail(t, -EINVAL, "unterminated single quote");
                if ((rc = tok_append(t, p + 1, (size_t)(end - p - 1))) < 0)
                    return rc;
                p = end + 1;
            } else if (*p == '"') {
                p++;
                while (*p != '"') {
                    if (!*p)
                        return tok_fail(t, -EINVAL, "unterminated double quote");
                    if (p[0] == '\\' && p[1] == '\n') {
                        p += 2;
                        continue;
                    }
                    if (p[0] == '\\' && p[1] && strchr("\"\\$`", p[1])) {
                        rc = tok_append(t, p + 1, 1);
                        p += 2;
                    } else if (p[0] == '$' && p[1] == '{' && t->mode != TOK_SPLIT) {
                        rc = tok_macro(t, &p);
                    } else {
                        rc = tok_append(t, p, 1);
                        p++;
                    }
                    if (rc < 0)
                        return rc;
                }
                p++;
            } else if (*p == '\\') {
                if (!p[1])
                    return tok_fail(t, -EINVAL, "trailing backslash; remove it or write '\\\\'");
                rc = p[1] == '\n' ? 0 : tok_append(t, p + 1, 1);
                if (rc < 0)
                    return rc;
                p += 2;
            } else if (p[0] == '$' && p[1] == '{' && t->mode != TOK_SPLIT) {
                if ((rc = tok_macro(t, &p)) < 0)
                    return rc;
            } else {
                /* This character and those after it that mean nothing here, at once. */
                size_t n = 1;
                while (!tok_special[(unsigned char)p[n]])
                    n++;
                if ((rc = tok_append(t, p, n)) < 0)
                    return rc;
                p += n;
            }
        }
        tok_push_word(t);
    }
    if (t->argc == 0)
        return tok_fail(t, -EINVAL, "empty command");
    return 0;
}

/* A port written as digits alone (1 to 65535), else 0. */
static int literal_port(const char *s, size_t n)
{
    long v = 0;
    if (n == 0 || n > 5)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= 65535 ? (int)v : 0;
}

/*
 * The host side of a container's published port: HOST:CONTAINER or
 * IP:HOST:CONTAINER (docker run -p), else 0 (a bare CONTAINER port gets a
 * random host port, a range is no one port).
 */
static int published_port(const char *s, size_t n)
{
    const char *last = memrchr(s, ':', n);
    if (!last)
        return 0;
    const char *first = memchr(s, ':', (size_t)(last - s));
    const char *host = first && first != last ? first + 1 : s;
    return literal_port(host, (size_t)(last - host));
}

static int word_is(const struct tok *t, const char *w)
{
    return t->small_len == strlen(w) && memcmp(t->small, w, t->small_len) == 0;
}

static int word_has_prefix(const struct tok *t, const char *w)
{
    size_t n = strlen(w);
    return t->small_len > n && memcmp(t->small, w, n) == 0;
}

/*
 * One word of a command, for config__cmd_port: `--port N`, `--port=N`, and
 * for a container runtime `-p HOST:CONTAINER` / `--publish`, written as
 * digits (a word with a macro in it is not a literal).
 */
static void tok_note_word(struct tok *t)
{
    struct config__cmd_port *cp = t->ports;
    int literal = !t->small_over && !t->small_macro;
    int want = t->want;
    t->want = WANT_NONE;
    if (t->argc == 0) {
        const char *base = literal ? memrchr(t->small, '/', t->small_len) : NULL;
        base = base ? base + 1 : t->small;
        size_t n = t->small_len - (size_t)(base - t->small);
        t->container = literal && ((n == 6 && !memcmp(base, "docker", 6)) ||
                                   (n == 6 && !memcmp(base, "podman", 6)) ||
                                   (n == 7 && !memcmp(base, "nerdctl", 7)));
        return;
    }
    if (t->small_over)
        return;
    if (want == WANT_PORT) {
        if (literal && literal_port(t->small, t->small_len))
            cp->option = literal_port(t->small, t->small_len);
        return;
    }
    if (want == WANT_PUBLISH) {
        if (literal && !cp->published)
            cp->published = published_port(t->small, t->small_len);
        return;
    }
    if (word_is(t, "--port")) {
        t->want = WANT_PORT;
    } else if (word_has_prefix(t, "--port=")) {
        if (literal && literal_port(t->small + 7, t->small_len - 7))
            cp->option = literal_port(t->small + 7, t->small_len - 7);
    } else if (t->container && (word_is(t, "-p") || word_is(t, "--publish"))) {
        t->want = WANT_PUBLISH;
    } else if (t->container && word_has_prefix(t, "--publish=")) {
        if (literal && !cp->published)
            cp->published = published_port(t->small + 10, t->small_len - 10);
    }
}

static char **tokenize(struct tok *t, const char *cmd)
{
    buf_init(&t->word, WORD_MAX);
    int rc = cmd ? tok_run(t, cmd) : tok_fail(t, -EINVAL, "empty command");
    buf_release(&t->word);
    if (rc < 0) {
        config_argv_free(t->argv);
        return NULL;
    }
    return t->argv;
}

char **config_split_argv(const char *cmd, char *err, size_t errlen)
{
    struct tok t = {.mode = TOK_SPLIT, .err = err, .errlen = errlen};
    return tokenize(&t, cmd);
}

struct config_cmd config_model_cmd(const struct config_model *m)
{
    return (struct config_cmd){
        .cmd = m->cmd, .name = m->name, .model_id = m->model_id, .env = m->env, .n_env = m->n_env};
}

char **config_expand_cmd(const struct config_cmd *c, int port, const char *gpus, char *err,
                         size_t errlen)
{
    struct tok t = {
        .mode = TOK_EXPAND, .c = c, .port = port, .gpus = gpus, .err = err, .errlen = errlen};
    return tokenize(&t, c->cmd);
}

void config_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

int config__check_cmd(const char *cmd, struct config__cmd_port *ports, char *err, size_t errlen)
{
    struct tok t = {.mode = TOK_CHECK, .err = err, .errlen = errlen, .ports = ports};
    if (ports)
        *ports = (struct config__cmd_port){0};
    buf_init(&t.word, WORD_MAX);
    int rc = cmd ? tok_run(&t, cmd) : tok_fail(&t, -EINVAL, "empty command");
    buf_release(&t.word);
    return rc;
}
