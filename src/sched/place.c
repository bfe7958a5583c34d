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
#include "runner/cgroup.h"
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
                ours = info.pid > 0 && host_pids_here(app->hosts, info.host) &&
                       runner_pid_owned_by(p->pid, info.pid, info.pid);
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

/* A step of a rent for a model: its waiters hear it (docs/cloud.md). */
static void on_rent_step(void *arg, const char *model, const char *text)
{
    struct sched__gpus *g = arg;
    sched__rent_step(g->owner, model, text);
}

/* A rent for a model ended (a machine ready, or the rent failed): its requests go on now. */
static void on_rent_done(void *arg, const char *model)
{
    struct sched__gpus *g = arg;
    (void)model;
    sched__kick(g->owner);
}

void sched__gpus_init(struct sched *s)
{
    struct sched__gpus *g = sched__gpus_of(s);
    g->owner = s;
    g->obs = (struct host_observer){
        .gpus = on_gpus_read, .rent_step = on_rent_step, .rent_done = on_rent_done, .arg = g};
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

enum sched__fit sched__fit_gpus(const struct sched__host_room *h, const char *model, uint64_t need,
                                int want, int waking, char *out, size_t outlen, char **why)
{
    if (h->anywhere)
        return SCHED__ANYWHERE;
    if (h->unread)
        return SCHED__WAIT;
    struct cand *c = xcalloc(h->n ? h->n : 1, sizeof *c);
    size_t n = 0, big_enough = 0;
    uint64_t largest = 0;
    for (size_t d = 0; d < h->n; d++) {
        const struct sched__gpu_room *g = &h->gpus[d];
        if (g->total > largest)
            largest = g->total;
        if (g->total >= need)
            big_enough++;
        c[n++] = (struct cand){g->index, g->free};
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

void sched__choose(const struct sched__host_room *hosts, size_t n, const char *model, uint64_t need,
                   int want, int waking, struct sched__where *w)
{
    *w = (struct sched__where){.host = -1, .fit = SCHED__UNREACHABLE};
    int wait_at = -1, never_at = -1;
    char *never_why = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!hosts[i].reachable)
            continue;
        char gpus[sizeof w->gpus] = "";
        char *why = NULL;
        enum sched__fit f =
            sched__fit_gpus(&hosts[i], model, need, want, waking, gpus, sizeof gpus, &why);
        if (f == SCHED__FITS || f == SCHED__ANYWHERE) {
            /* The first host where it fits as things are: no eviction for a later one. */
            w->host = (int)i;
            w->fit = f;
            snprintf(w->gpus, sizeof w->gpus, "%s", gpus);
            free(never_why);
            return;
        }
        if (f == SCHED__WAIT && wait_at < 0)
            wait_at = (int)i;
        if (f == SCHED__NEVER && never_at < 0) {
            never_at = (int)i;
            never_why = why;
        } else {
            free(why);
        }
    }
    if (wait_at >= 0) {
        /* Nowhere fits now: room is made on the first host where it can. */
        w->host = wait_at;
        w->fit = SCHED__WAIT;
        free(never_why);
        return;
    }
    int unreachable = 0;
    for (size_t i = 0; i < n; i++)
        unreachable |= !hosts[i].reachable;
    if (never_at >= 0 && !unreachable) {
        w->host = never_at;
        w->fit = SCHED__NEVER;
        w->why = never_why;
        return;
    }
    free(never_why);
    /* No host answers (or those that do are too small): say why each is out. */
    struct buf b;
    buf_init(&b, 2048);
    buf_printf(&b, "no host of model '%s' can take it now:", model);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s %s", i ? ";" : "",
                   hosts[i].reachable     ? "its GPUs are too small"
                   : hosts[i].unavailable ? hosts[i].unavailable
                                          : "it does not answer");
    w->why = xstrdup(b.data ? b.data : "no host can take it now");
    buf_release(&b);
}

/* Per GPU of host h (name), what is free for replica of model (self: its instance). */
static void host_room(struct sched *s, const struct config_model *m, const struct sup_info *self,
                      int replica, int waking, const char *name, const uint64_t *extra_free,
                      const char *extra_host, struct sched__host_room *r)
{
    struct app *app = sched__app(s);
    struct sched__gpus *g = sched__gpus_of(s);
    const char *model = m->name;
    *r = (struct sched__host_room){.name = name, .reachable = 1};
    struct host *h = host_find(app->hosts, name);
    const char *lost = NULL;
    int retry_s = 0;
    if (!h && app->cfg && config_find_cloud(app->cfg, name)) {
        /* A cloud: the machine rented for this model, once there is one (docs/cloud.md). */
        const char *as = NULL, *why = NULL;
        switch (host_cloud_state(app->hosts, name, model, &as, &why)) {
        case HOST_CLOUD_READY:
            r->as = as;
            name = as;
            h = host_find(app->hosts, as);
            break;
        case HOST_CLOUD_PENDING:
            r->unread = 1;
            r->renting = 1;
            return;
        case HOST_CLOUD_FAILED:
            r->reachable = 0;
            r->unavailable = xstrfmt("cloud '%s' %s", name, why);
            return;
        case HOST_CLOUD_NONE:
            r->unread = 1;
            r->rent = 1;
            return;
        }
    }
    if (!h) {
        r->reachable = 0;
        if (app->cfg && config_find_slurm(app->cfg, name))
            r->unavailable = xstrfmt("'%s' is a Slurm cluster added to the config after the "
                                     "daemon started; restart the daemon to submit jobs there",
                                     name);
        else
            r->unavailable =
                xstrfmt("pod '%s' is not known (add it with 'yard pod add %s')", name, name);
        return;
    }
    const char *reason = NULL;
    if (host_reachable(h, &reason) == HOST_REACH_NO ||
        host_runner_lost(app->hosts, name, &lost, &retry_s)) {
        r->reachable = 0;
        r->unavailable = xstrfmt("pod '%s' does not answer (%s)", name,
                                 lost && *lost ? lost
                                 : reason      ? reason
                                               : "no answer");
        return;
    }
    if (!m->vram) {
        r->anywhere = 1;
        return;
    }
    /*
     * The host's GPUs from the registry: a pod's are what its last poll (or its
     * record) says, and nothing else runs there; local's as last read.
     */
    const struct gpu_inventory *inv = host_gpus(h);
    const uint64_t *foreign = NULL;
    if (h->kind != HOST_LOCAL) {
        if (!inv->n) {
            r->anywhere = 1;
            return;
        }
    } else {
        if (!app->gpu) {
            r->anywhere = 1;
            return;
        }
        if (!h->have_gpus) {
            sched__gpus_refresh(s);
            r->unread = 1;
            return;
        }
        if (!inv->n) {
            r->anywhere = 1;
            return;
        }
        foreign = g->foreign;
    }
    if (waking && !*self->gpus) {
        r->anywhere = 1; /* it sleeps where no GPU was recorded: nothing to check */
        return;
    }
    struct sched__gpu_room *rooms = xcalloc(inv->n, sizeof *rooms);
    size_t n = 0;
    for (size_t d = 0; d < inv->n; d++) {
        const struct gpu_dev *dev = &inv->devs[d];
        int allowed = !m->n_gpu_list;
        for (size_t k = 0; k < m->n_gpu_list; k++)
            allowed |= m->gpu_list[k] == dev->index;
        if (waking)
            allowed = gpu_list_has(self->gpus, dev->index);
        if (!allowed)
            continue;
        uint64_t reserved = foreign ? foreign[d] : 0;
        for (size_t i = 0; i < sched__sup(s)->count(app->sup); i++) {
            struct sup_info o;
            sched__sup(s)->info_at(app->sup, i, &o);
            int holds = o.state == INST_STARTING || o.state == INST_READY ||
                        o.state == INST_STOPPING || o.state == INST_UNKNOWN ||
                        ((o.state == INST_SLEEPING || o.state == INST_CHECKPOINTED) && o.busy);
            const struct config_model *om = config_find_model(app->cfg, o.name);
            /* Only what runs on this host takes this host's memory. */
            if (holds && om && om->vram && gpu_list_has(o.gpus, dev->index) &&
                (strcmp(o.name, model) != 0 || o.replica != replica) && strcmp(o.host, name) == 0)
                reserved += sched__per_gpu(om);
        }
        uint64_t used = dev->used == UINT64_MAX ? 0 : dev->used;
        /* A sleeping model's own remainder comes back to it when it wakes. */
        if (waking)
            for (size_t k = 0; k < dev->n_procs; k++)
                if (dev->procs[k].used != UINT64_MAX &&
                    runner_pid_owned_by(dev->procs[k].pid, self->pid, self->pid))
                    used -= dev->procs[k].used < used ? dev->procs[k].used : used;
        uint64_t taken = used > reserved ? used : reserved;
        uint64_t free_b = dev->total > taken ? dev->total - taken : 0;
        /* Memory an eviction would free counts on its own host only. */
        if (extra_free && extra_host && strcmp(extra_host, name) == 0)
            free_b += extra_free[dev->index < 0 ? 0 : dev->index];
        rooms[n++] = (struct sched__gpu_room){dev->index, dev->total, free_b};
    }
    r->gpus = rooms;
    r->n = n;
}

enum sched__fit sched__place(struct sched *s, const char *model, int replica,
                             const uint64_t *extra_free, const char *extra_host,
                             struct sched__where *w)
{
    struct app *app = sched__app(s);
    *w = (struct sched__where){.host = -1, .fit = SCHED__ANYWHERE};
    const struct config_model *m = config_find_model(app->cfg, model);
    struct sup_info self;
    if (!m || sched__sup(s)->info(app->sup, model, &self) < 0)
        return SCHED__ANYWHERE;
    struct sup_info mine;
    if (replica > 0 && sched__sup(s)->info_replica(app->sup, model, replica, &mine) == 0)
        self = mine;
    /* Only replica 0 sleeps; another replica always starts anew. */
    int waking = replica == 0 && (self.state == INST_SLEEPING || self.state == INST_CHECKPOINTED);
    /*
     * The preference: the model's hosts in order; a sleeping model wakes where
     * it sleeps, and yard start --pod keeps the pod it named.
     */
    static const char *const local_only[] = {HOST_LOCAL_NAME};
    const char *const *names = m->n_hosts ? (const char *const *)m->hosts : local_only;
    size_t n = m->n_hosts ? m->n_hosts : 1;
    const char *one[1] = {self.host};
    if (waking || (replica == 0 && self.host_fixed)) {
        names = one;
        n = 1;
    }
    struct sched__host_room *rooms = xcalloc(n, sizeof *rooms);
    for (size_t i = 0; i < n; i++)
        host_room(s, m, &self, replica, waking, names[i], extra_free, extra_host, &rooms[i]);
    int want = m->gpu_count > 0 ? m->gpu_count : 1;
    sched__choose(rooms, n, m->name, m->vram ? sched__per_gpu(m) : 0, want, waking, w);
    if (w->host >= 0) {
        const struct sched__host_room *c = &rooms[w->host];
        snprintf(w->host_name, sizeof w->host_name, "%s", c->as ? c->as : names[w->host]);
        w->rent = w->fit == SCHED__WAIT && c->rent;
        w->renting = w->fit == SCHED__WAIT && c->renting;
    }
    for (size_t i = 0; i < n; i++) {
        free((void *)rooms[i].gpus);
        free(rooms[i].unavailable);
    }
    free(rooms);
    return w->fit;
}
