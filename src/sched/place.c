/*
 * Placement by GPU memory. The host registry keeps each host's last inventory
 * (local's read in the thread pool, never on the loop; a pod's from its polls)
 * and the scheduler counts, per GPU of the instance's host:
 *
 *   free = total - max(measured used, yard's reservations + foreign use)
 *
 * where a reservation is the declared `vram` (per GPU) of every instance that
 * holds its memory (loading, ready, stopping, waking). Taking the larger of
 * the two covers a load that has not allocated yet (reserved, not measured)
 * and an engine that stopped but whose memory is not back yet (measured, no
 * longer reserved): a model starts only once the inventory shows the room.
 * GPUs are chosen least loaded first.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/units.h"
#include "config/config.h"
#include "host/host.h"
#include "sched/internal.h"
#include "sup/sup.h"

uint64_t sched__per_gpu(const struct config_model *m)
{
    int n = m->gpu_count > 0 ? m->gpu_count : 1;
    return m->vram / (uint64_t)n;
}

/* Which processes on each of local's GPUs belong to none of yard's instances. */
static void count_foreign(struct sched *s, struct sched__gpus *g, const struct gpu_inventory *inv)
{
    struct app *app = sched__app(s);
    const struct sched_sup_ops *sup = sched__sup(s);
    free(g->foreign);
    g->foreign = xcalloc(inv->n ? inv->n : 1, sizeof *g->foreign);
    for (size_t d = 0; d < inv->n; d++) {
        const struct gpu_dev *dev = &inv->devs[d];
        for (size_t k = 0; k < dev->n_procs; k++) {
            const struct gpu_proc *p = &dev->procs[k];
            if (p->used == UINT64_MAX)
                continue;
            int ours = 0;
            for (size_t i = 0; i < sup->count(app->sup) && !ours; i++) {
                struct sup_info info;
                sup->info_at(app->sup, i, &info);
                ours = info.pid > 0 && strcmp(info.host, "local") == 0 &&
                       gpu_pid_owned_by(p->pid, info.pid, info.pid);
            }
            if (!ours)
                g->foreign[d] += p->used;
        }
    }
}

/* The registry read local's GPUs (in the thread pool): count what is not ours, place again. */
static void on_gpus_read(void *arg, struct host *h)
{
    struct sched__gpus *g = arg;
    struct sched *s = g->owner;
    if (h->kind != HOST_LOCAL)
        return;
    g->read_ms = sched__app(s)->now_ms();
    count_foreign(s, g, &h->gpus);
    sched__kick(s);
}

void sched__gpus_init(struct sched *s)
{
    struct sched__gpus *g = sched__gpus_of(s);
    g->owner = s;
    g->obs = (struct host_observer){.gpus = on_gpus_read, .arg = g};
    host_observe(sched__app(s)->hosts, &g->obs);
    sched__gpus_refresh(s);
}

void sched__gpus_refresh(struct sched *s)
{
    host_refresh_gpus(sched__app(s)->hosts);
}

uint64_t sched__gpus_read_ms(struct sched *s)
{
    return sched__gpus_of(s)->read_ms;
}

void sched__gpus_release(struct sched *s)
{
    struct sched__gpus *g = sched__gpus_of(s);
    free(g->foreign);
    g->foreign = NULL;
}

struct cand {
    int index;
    uint64_t free;
};

static int by_free_desc(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return x->free < y->free ? 1 : x->free > y->free ? -1 : x->index - y->index;
}

enum sched__fit sched__place(struct sched *s, const char *model, int replica, char *out,
                             size_t outlen, const uint64_t *extra_free, char **why)
{
    struct app *app = sched__app(s);
    struct sched__gpus *g = sched__gpus_of(s);
    const struct config_model *m = config_find_model(app->cfg, model);
    struct sup_info self;
    if (!m || !m->vram || sched__sup(s)->info(app->sup, model, &self) < 0)
        return SCHED__ANYWHERE;
    /*
     * The host's GPUs from the registry: a pod's are what its last poll (or its
     * record) says, and nothing else runs there; local's as last read.
     */
    struct host *h = host_find(app->hosts, self.host);
    if (!h)
        return SCHED__ANYWHERE; /* a pod not recorded: its start says so */
    const struct gpu_inventory *inv = host_gpus(h);
    const uint64_t *foreign = NULL;
    if (h->kind != HOST_LOCAL) {
        if (!inv->n)
            return SCHED__ANYWHERE;
    } else {
        if (!app->gpu)
            return SCHED__ANYWHERE;
        if (!h->have_gpus) {
            sched__gpus_refresh(s);
            return SCHED__WAIT;
        }
        if (!inv->n)
            return SCHED__ANYWHERE;
        foreign = g->foreign;
    }
    /* Only replica 0 sleeps; another replica always starts anew. */
    int waking = replica == 0 && (self.state == INST_SLEEPING || self.state == INST_CHECKPOINTED);
    if (waking && !*self.gpus)
        return SCHED__ANYWHERE; /* it sleeps where no GPU was recorded: nothing to check */
    int want = m->gpu_count > 0 ? m->gpu_count : 1;
    uint64_t need = sched__per_gpu(m);

    struct cand *c = xcalloc(inv->n, sizeof *c);
    size_t n = 0, big_enough = 0;
    uint64_t largest = 0;
    for (size_t d = 0; d < inv->n; d++) {
        const struct gpu_dev *dev = &inv->devs[d];
        int allowed = !m->n_gpu_list;
        for (size_t k = 0; k < m->n_gpu_list; k++)
            allowed |= m->gpu_list[k] == dev->index;
        if (waking)
            allowed = gpu_list_has(self.gpus, dev->index);
        if (!allowed)
            continue;
        if (dev->total > largest)
            largest = dev->total;
        if (dev->total >= need)
            big_enough++;
        uint64_t reserved = foreign ? foreign[d] : 0;
        for (size_t i = 0; i < sched__sup(s)->count(app->sup); i++) {
            struct sup_info o;
            sched__sup(s)->info_at(app->sup, i, &o);
            int holds = o.state == INST_STARTING || o.state == INST_READY ||
                        o.state == INST_STOPPING ||
                        ((o.state == INST_SLEEPING || o.state == INST_CHECKPOINTED) && o.busy);
            const struct config_model *om = config_find_model(app->cfg, o.name);
            if (holds && om && om->vram && gpu_list_has(o.gpus, dev->index) &&
                (strcmp(o.name, model) != 0 || o.replica != replica) &&
                strcmp(o.host, self.host) == 0)
                reserved += sched__per_gpu(om);
        }
        uint64_t used = dev->used == UINT64_MAX ? 0 : dev->used;
        /* A sleeping model's own remainder comes back to it when it wakes. */
        if (waking)
            for (size_t k = 0; k < dev->n_procs; k++)
                if (dev->procs[k].used != UINT64_MAX &&
                    gpu_pid_owned_by(dev->procs[k].pid, self.pid, self.pid))
                    used -= dev->procs[k].used < used ? dev->procs[k].used : used;
        uint64_t taken = used > reserved ? used : reserved;
        uint64_t free_b = dev->total > taken ? dev->total - taken : 0;
        if (extra_free)
            free_b += extra_free[dev->index < 0 ? 0 : dev->index];
        c[n++] = (struct cand){dev->index, free_b};
    }
    if (!waking && big_enough < (size_t)want) {
        char a[32], b[32];
        if (big_enough)
            *why = xstrfmt("model '%s' needs %s on each of %d GPUs and only %zu GPUs are that "
                           "large; it can never be loaded here (lower its vram or gpus)",
                           model, units_fmt_size(need, a, sizeof a), want, big_enough);
        else
            *why = xstrfmt("model '%s' needs %s per GPU and the largest GPU has %s; it can never "
                           "be loaded here (lower its vram or gpus)",
                           model, units_fmt_size(need, a, sizeof a),
                           units_fmt_size(largest, b, sizeof b));
        free(c);
        return SCHED__NEVER;
    }
    qsort(c, n, sizeof *c, by_free_desc);
    size_t fit = 0;
    while (fit < n && c[fit].free >= need)
        fit++;
    if (fit < (size_t)want) {
        free(c);
        return SCHED__WAIT;
    }
    struct buf b;
    buf_init(&b, outlen ? outlen - 1 : 0);
    for (int i = 0; i < want; i++)
        buf_printf(&b, "%s%d", i ? "," : "", c[i].index);
    snprintf(out, outlen, "%s", b.data ? b.data : "");
    buf_release(&b);
    free(c);
    return SCHED__FITS;
}
