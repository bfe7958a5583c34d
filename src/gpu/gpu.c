/*
 * The GPU inventory: picks a source (declared GPUs, NVML, nvidia-smi), turns
 * what it reads into struct gpu_inventory and that into the daemon's JSON;
 * and the process helpers the scheduler needs to map GPU processes to
 * instances (liveness, process trees). See docs/gpu.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/utf8.h"
#include "gpu/gpu.h"

/* A ledger larger than this is not one the mock engine wrote. */
#define LEDGER_MAX (16u * 1024 * 1024)

struct gpu {
    struct gpu_decl *decl; /* names owned */
    size_t n_decl;
    char *ledger;
    char *smi;      /* the nvidia-smi program */
    char *nvml_lib; /* NULL: the default names */
    int nvml_off;
    int nvml_tried;
    struct gpu__nvml *nvml;  /* loaded and initialised, or NULL */
    char *nvml_err;          /* why NVML loaded but could not be initialised */
    uint64_t smi_missing_ms; /* when nvidia-smi was last not found; 0: found, or not looked */
    pthread_mutex_t lock;    /* one read at a time: thread-pool reads may overlap */
};

/*
 * A host without nvidia-smi is looked at again this long after (a driver
 * installed meanwhile is seen then): the scheduler reads the inventory every
 * few seconds, and each look searched the whole PATH in a child.
 */
#define SMI_MISSING_RETRY_MS 30000

struct gpu *gpu_new(const struct gpu_decl *decl, size_t n_decl, const char *ledger,
                    const char *nvidia_smi)
{
    struct gpu *g = xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    if (n_decl > 0) {
        g->decl = xcalloc(n_decl, sizeof(*g->decl));
        for (size_t i = 0; i < n_decl; i++) {
            g->decl[i] = decl[i];
            g->decl[i].name = xstrdup(decl[i].name ? decl[i].name : "");
        }
        g->n_decl = n_decl;
    }
    g->ledger = ledger && *ledger ? xstrdup(ledger) : NULL;
    g->smi = xstrdup(nvidia_smi && *nvidia_smi ? nvidia_smi : "nvidia-smi");
    return g;
}

void gpu_free(struct gpu *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_decl; i++)
        free((char *)g->decl[i].name);
    free(g->decl);
    free(g->ledger);
    free(g->smi);
    free(g->nvml_lib);
    free(g->nvml_err);
    gpu__nvml_close(g->nvml);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

int gpu_set_nvml(struct gpu *g, const char *lib)
{
    pthread_mutex_lock(&g->lock);
    if (g->nvml) {
        pthread_mutex_unlock(&g->lock);
        return -EBUSY;
    }
    free(g->nvml_lib);
    g->nvml_lib = lib && *lib ? xstrdup(lib) : NULL;
    g->nvml_off = !lib || !*lib;
    g->nvml_tried = 0;
    free(g->nvml_err);
    g->nvml_err = NULL;
    pthread_mutex_unlock(&g->lock);
    return 0;
}

void gpu_inventory_release(struct gpu_inventory *inv)
{
    for (size_t i = 0; i < inv->n; i++)
        free(inv->devs[i].procs);
    free(inv->devs);
    inv->devs = NULL;
    inv->n = 0;
}

void gpu__dev_add_proc(struct gpu_dev *dev, int pid, uint64_t used, const char *name)
{
    dev->procs = xrealloc(dev->procs, (dev->n_procs + 1) * sizeof(*dev->procs));
    struct gpu_proc *p = &dev->procs[dev->n_procs++];
    memset(p, 0, sizeof(*p));
    p->pid = pid;
    p->used = used;
    snprintf(p->name, sizeof(p->name), "%s", name ? name : "");
    /* A process name is anyone's choice: keep it to one printable line. */
    for (char *c = p->name; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
}

/* Reads the whole of a small text file; -ENOENT when it does not exist. */
static int read_text(const char *path, size_t max, char **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = 0, cap = 4096;
    char *s = xmalloc(cap + 1);
    int rc = 0;
    for (;;) {
        if (len == cap) {
            if (cap >= max) {
                rc = -EFBIG;
                break;
            }
            cap = cap * 2 > max ? max : cap * 2;
            s = xrealloc(s, cap + 1);
        }
        ssize_t n = read(fd, s + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (rc < 0) {
        free(s);
        return rc;
    }
    s[len] = '\0';
    *out = s;
    return 0;
}

static int read_declared(struct gpu *g, struct gpu_inventory *out, char **err)
{
    out->devs = xcalloc(g->n_decl, sizeof(*out->devs));
    out->n = g->n_decl;
    for (size_t i = 0; i < g->n_decl; i++) {
        struct gpu_dev *d = &out->devs[i];
        d->index = g->decl[i].index;
        snprintf(d->name, sizeof(d->name), "%s", g->decl[i].name);
        d->total = g->decl[i].memory;
        d->free = d->total;
    }
    out->source = "declared";
    if (!g->ledger)
        return 0;

    char *text = NULL;
    int rc = read_text(g->ledger, LEDGER_MAX, &text);
    if (rc == -ENOENT)
        return 0; /* no engine has written it yet: nothing is used */
    if (rc < 0) {
        *err = xstrfmt("cannot read the GPU ledger '%s': %s", g->ledger, strerror(-rc));
        return rc;
    }
    rc = gpu__parse_ledger(text, out);
    free(text);
    if (rc < 0)
        *err = xstrfmt("the GPU ledger '%s' has a malformed line (expected 'PID GPU BYTES NAME')",
                       g->ledger);
    return rc;
}

static int read_detected(struct gpu *g, struct gpu_inventory *out, char **err)
{
    if (!g->nvml_tried && !g->nvml_off) {
        g->nvml_tried = 1;
        char *e = NULL;
        int rc = gpu__nvml_open(g->nvml_lib, &g->nvml, &e);
        if (rc < 0 && rc != -ENOENT)
            g->nvml_err = e ? e : xstrfmt("cannot initialise NVML: %s", strerror(-rc));
        else
            free(e);
    }
    if (g->nvml) {
        int rc = gpu__nvml_read(g->nvml, out, err);
        if (rc == 0)
            out->source = "nvml";
        return rc;
    }

    uint64_t now = clock_mono_ms();
    int rc = g->smi_missing_ms && now - g->smi_missing_ms < SMI_MISSING_RETRY_MS
                 ? -ENOENT
                 : gpu__smi_read(g->smi, out, err);
    if (rc != -ENOENT) {
        g->smi_missing_ms = 0;
        return rc;
    }
    if (!g->smi_missing_ms || now - g->smi_missing_ms >= SMI_MISSING_RETRY_MS)
        g->smi_missing_ms = now ? now : 1;
    if (g->nvml_err) {
        /* The driver's library is here but unusable, and so no nvidia-smi: say why. */
        *err = xstrdup(g->nvml_err);
        return -EIO;
    }
    out->source = "none"; /* a CPU-only host: nothing to report, not an error */
    return 0;
}

int gpu_read(struct gpu *g, struct gpu_inventory *out, char **err)
{
    char *e = NULL;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&g->lock);
    int rc = g->n_decl > 0 ? read_declared(g, out, &e) : read_detected(g, out, &e);
    pthread_mutex_unlock(&g->lock);
    if (rc < 0) {
        gpu_inventory_release(out);
        out->source = NULL;
        if (!e)
            e = xstrfmt("cannot read the GPU inventory: %s", strerror(-rc));
    }
    if (err)
        *err = e;
    else
        free(e);
    return rc;
}

static json_t *bytes_json(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX && v != UINT64_MAX ? json_integer((json_int_t)v) : json_null();
}

/*
 * A value json_pack built of valid parts (names through utf8_json_xstring):
 * NULL only for want of memory, which aborts as xmalloc does.
 */
static json_t *must(json_t *v)
{
    if (!v) {
        fprintf(stderr, "yard: out of memory building the GPU inventory's JSON\n");
        abort();
    }
    return v;
}

static void append(json_t *arr, json_t *v)
{
    if (json_array_append_new(arr, must(v)) < 0)
        must(NULL);
}

/* Names, uuids and process names come from the driver, nvidia-smi or a pod's ssh. */
void *gpu_inventory_json(const struct gpu_inventory *inv)
{
    json_t *gpus = must(json_array());
    for (size_t i = 0; i < inv->n; i++) {
        const struct gpu_dev *d = &inv->devs[i];
        json_t *procs = must(json_array());
        for (size_t k = 0; k < d->n_procs; k++) {
            const struct gpu_proc *p = &d->procs[k];
            append(procs,
                   json_pack("{s:i, s:o, s:o, s:n}", "pid", p->pid, "used", bytes_json(p->used),
                             "name", utf8_json_xstring(p->name), "model"));
        }
        append(gpus, json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "index", d->index, "uuid",
                               utf8_json_xstring(d->uuid), "name", utf8_json_xstring(d->name),
                               "total", bytes_json(d->total), "used", bytes_json(d->used), "free",
                               bytes_json(d->free), "processes", procs));
    }
    return must(
        json_pack("{s:s, s:o}", "source", inv->source ? inv->source : "none", "gpus", gpus));
}

/* ---- processes ---- */

void gpu__proc_name(int pid, char *name, size_t len)
{
    char path[64], *text = NULL;
    if (len == 0)
        return;
    name[0] = '\0';
    /*
     * cmdline first: engines retitle their workers with setproctitle
     * ("VLLM::EngineCore"), which comm truncates to 15 bytes.
     */
    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    if (read_text(path, 4096, &text) == 0 && text[0]) {
        char *arg0 = text;
        size_t n = strlen(arg0);
        while (n > 0 && arg0[n - 1] == ' ')
            arg0[--n] = '\0';
        /* A path without arguments (not a retitled "a b/c") shows as its base name. */
        char *slash = !strchr(arg0, ' ') ? strrchr(arg0, '/') : NULL;
        if (slash && slash[1])
            arg0 = slash + 1;
        snprintf(name, len, "%s", arg0);
        free(text);
        if (name[0])
            return;
    } else {
        free(text);
    }
    text = NULL;
    snprintf(path, sizeof(path), "/proc/%d/comm", pid);
    if (read_text(path, 4096, &text) == 0) {
        text[strcspn(text, "\n")] = '\0';
        snprintf(name, len, "%s", text);
    }
    free(text);
}

int gpu_list_has(const char *list, int index)
{
    const char *p = list;
    while (p && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            return 0;
        if (v == index)
            return 1;
        p = *end == ',' ? end + 1 : NULL;
    }
    return 0;
}

void *gpu_record_json(const struct gpu_inventory *inv)
{
    json_t *arr = must(json_array());
    for (size_t i = 0; i < inv->n; i++) {
        const struct gpu_dev *d = &inv->devs[i];
        append(arr,
               json_pack("{s:i, s:o, s:o, s:o}", "index", d->index, "name",
                         utf8_json_xstring(d->name), "memory_total",
                         d->total ? json_integer((json_int_t)d->total) : json_null(), "memory_used",
                         d->used != UINT64_MAX ? json_integer((json_int_t)d->used) : json_null()));
    }
    return arr;
}

int gpu_record_parse(const char *text, struct gpu_inventory *out)
{
    memset(out, 0, sizeof *out);
    json_t *arr = text ? json_loads(text, 0, NULL) : NULL;
    if (!json_is_array(arr)) {
        json_decref(arr);
        return -EINVAL;
    }
    size_t n = json_array_size(arr);
    out->devs = xcalloc(n ? n : 1, sizeof *out->devs);
    out->source = "record";
    for (size_t i = 0; i < n; i++) {
        const json_t *g = json_array_get(arr, i);
        struct gpu_dev *d = &out->devs[out->n++];
        const json_t *total = json_object_get(g, "memory_total");
        const json_t *used = json_object_get(g, "memory_used");
        const char *name = json_string_value(json_object_get(g, "name"));
        d->index = (int)json_integer_value(json_object_get(g, "index"));
        snprintf(d->name, sizeof d->name, "%s", name ? name : "");
        d->total = json_is_integer(total) ? (uint64_t)json_integer_value(total) : 0;
        d->used = json_is_integer(used) ? (uint64_t)json_integer_value(used) : UINT64_MAX;
        d->free = d->used != UINT64_MAX && d->total > d->used ? d->total - d->used : 0;
    }
    json_decref(arr);
    return 0;
}
