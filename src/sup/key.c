/*
 * Engine API keys (engine/key.h): the daemon's secret is read (or made) once
 * at start; each local instance's key is derived from it, its model name and
 * its port, so a daemon that adopts a running engine knows its key without
 * storing it. Engines on pods get one only when their cmd asks for it with
 * ${API_KEY}: yard would otherwise have to put it on a command line there.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/hash.h"
#include "base/log.h"
#include "engine/key.h"
#include "store/secret.h"
#include "sup/sup_int.h"

#define SECRET_FILE "engine.secret"
#define KEY_CACHE 64 /* derived keys kept, direct-mapped by (name, port) */

/*
 * The proxy asks for a key on every request: a derivation costs about 2 us,
 * a cache hit a hash and a compare.
 */
struct sup__key_slot {
    char *name;
    int port;
    char key[ENGINE_KEY_HEX + 1];
};

struct sup__keys {
    unsigned char secret[STORE_SECRET_LEN];
    struct sup__key_slot cache[KEY_CACHE];
};

void sup__key_init(struct sup *s)
{
    char *err = NULL;
    struct sup__keys *k = xcalloc(1, sizeof *k);
    if (store_secret_load(s->app->state_dir, SECRET_FILE, k->secret, &err) < 0) {
        log_error("sup",
                  "%s; engines run without an API key, so local users can reach them "
                  "directly",
                  err);
        free(err);
        free(k);
        return;
    }
    s->keys = k;
}

void sup__key_release(struct sup *s)
{
    struct sup__keys *k = s->keys;
    if (!k)
        return;
    for (size_t i = 0; i < KEY_CACHE; i++)
        free(k->cache[i].name);
    memset(k, 0, sizeof *k);
    free(k);
    s->keys = NULL;
}

static size_t slot_of(const char *name, int port)
{
    return (size_t)((hash_fnv1a(name) ^ (uint32_t)port) % KEY_CACHE);
}

enum { KEY_YARDS = 1, KEY_MACRO, KEY_OWN };

/*
 * Whose key the engine holds, worked out once per spec and engine (the
 * router asks on every request): KEY_OWN when the model gives its engine a
 * key of its own (an --api-key word in its cmd without ${API_KEY}, or the
 * engine's key variable in its env): yard then leaves the engine's key alone
 * and passes the client's credentials through, as it did before engines had
 * keys of yard's. KEY_MACRO: its cmd asks for yard's with ${API_KEY}.
 */
static int key_kind(struct instance *in)
{
    if (in->key_kind)
        return in->key_kind;
    const struct sup_spec *sp = &in->spec;
    int kind = KEY_YARDS;
    if (sp->cmd && strstr(sp->cmd, "${API_KEY}"))
        kind = KEY_MACRO;
    else if (sp->cmd && (strstr(sp->cmd, "--api-key ") || strstr(sp->cmd, "--api-key=") ||
                         strstr(sp->cmd, "--api-key\t")))
        kind = KEY_OWN;
    for (size_t i = 0; kind == KEY_YARDS && in->eng && in->eng->key_env && i < sp->n_env; i++)
        if (strcmp(sp->env[i].key, in->eng->key_env) == 0)
            kind = KEY_OWN;
    in->key_kind = kind;
    return kind;
}

int sup__engine_key(struct instance *in, char out[ENGINE_KEY_HEX + 1])
{
    struct sup__keys *k = in->sup->keys;
    out[0] = '\0';
    if (in->ckpt_engine_key) {
        /* Restored from the store: the key is the one it was started with, elsewhere. */
        memcpy(out, in->ckpt_engine_key, ENGINE_KEY_HEX + 1);
        return 0;
    }
    if (!k || in->port <= 0 || !in->runner)
        return -ENOKEY;
    int kind = key_kind(in);
    if (kind == KEY_OWN || (!in->runner->pids_here && kind != KEY_MACRO))
        return -ENOKEY;
    struct sup__key_slot *slot = &k->cache[slot_of(in->name, in->port)];
    if (!slot->name || slot->port != in->port || strcmp(slot->name, in->name) != 0) {
        free(slot->name);
        slot->name = xstrdup(in->name);
        slot->port = in->port;
        engine_key_derive(k->secret, STORE_SECRET_LEN, in->name, in->port, slot->key);
    }
    memcpy(out, slot->key, sizeof slot->key);
    return 0;
}

int sup_engine_key(struct sup *s, const char *model, int replica, char *out, size_t len)
{
    struct instance *in = sup__find(s, model);
    for (size_t i = 0; in && replica > 0 && i < s->n_inst; i++)
        if (s->inst[i]->replica == replica && !s->inst[i]->removed &&
            strcmp(s->inst[i]->name, in->name) == 0)
            in = s->inst[i];
    if (in && in->replica != replica)
        in = NULL;
    char key[ENGINE_KEY_HEX + 1];
    if (len < sizeof key || !in || sup__engine_key(in, key) < 0)
        return -ENOKEY;
    memcpy(out, key, sizeof key);
    return 0;
}

/* Replaces every "${API_KEY}" in word with key (config/argv.c leaves the macro as it is). */
static char *with_key(char *word, const char *key)
{
    static const char macro[] = "${API_KEY}";
    if (!strstr(word, macro))
        return word;
    struct buf b;
    buf_init(&b, strlen(word) * (ENGINE_KEY_HEX + 1) + 1);
    const char *p = word, *hit;
    while ((hit = strstr(p, macro)) != NULL) {
        buf_append(&b, p, (size_t)(hit - p));
        buf_appends(&b, key);
        p = hit + sizeof macro - 1;
    }
    buf_appends(&b, p);
    free(word);
    return buf_detach(&b, NULL);
}

void sup__key_setup(struct instance *in, char ***argv, char ***env)
{
    char key[ENGINE_KEY_HEX + 1];
    /* Without a key (no secret: logged at start) the macro is empty: the engine runs open. */
    int have = sup__engine_key(in, key) == 0;
    if (!have)
        key[0] = '\0';
    size_t na = 0, ne = 0;
    while ((*argv)[na]) {
        (*argv)[na] = with_key((*argv)[na], key);
        na++;
    }
    if (!have || !in->runner->pids_here)
        return;
    while (*env && (*env)[ne])
        ne++;
    if (in->eng->key_env) {
        /* The model's own env entry of that name would shadow ours: the key is yard's. */
        size_t klen = strlen(in->eng->key_env), k = 0;
        for (size_t i = 0; i < ne; i++) {
            if (strncmp((*env)[i], in->eng->key_env, klen) == 0 && (*env)[i][klen] == '=')
                free((*env)[i]);
            else
                (*env)[k++] = (*env)[i];
        }
        ne = k;
        *env = xrealloc(*env, (ne + 2) * sizeof **env);
        (*env)[ne++] = xstrfmt("%s=%s", in->eng->key_env, key);
        (*env)[ne] = NULL;
    } else if (in->eng->key_flag) {
        *argv = xrealloc(*argv, (na + 3) * sizeof **argv);
        (*argv)[na++] = xstrdup(in->eng->key_flag);
        (*argv)[na++] = xstrdup(key);
        (*argv)[na] = NULL;
    }
}
