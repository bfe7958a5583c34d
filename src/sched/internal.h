#ifndef YARD_SCHED_INTERNAL_H
#define YARD_SCHED_INTERNAL_H

/* Shared by the files of the scheduler; not for other modules. */

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "gpu/gpu.h"
#include "sched/sched.h"

struct sched;
struct smodel;
struct config_model;

/* The last GPU inventory read, and what of it is not yard's. */
struct sched__gpus {
    struct sched *owner;
    struct gpu_inventory inv;
    uint64_t *foreign; /* per device: bytes held by processes no instance owns */
    int have;          /* an inventory was read at least once */
    int reading;       /* a read runs in the thread pool */
    int again;         /* read again when it returns */
    uint64_t read_ms;  /* when the last read finished */
    uv_work_t work;
    struct gpu_inventory next;
    char *err;
    int rc;
};

enum sched__fit {
    SCHED__FITS = 0, /* out holds the GPUs to use */
    SCHED__WAIT,     /* not now: memory must be freed first */
    SCHED__NEVER,    /* bigger than the GPUs: *why says so */
    SCHED__ANYWHERE, /* no memory declared or no GPU known: start as configured */
};

/* sched.c: the scheduler's parts place.c needs. */
struct sched__gpus *sched__gpus_of(struct sched *s);
struct app *sched__app(struct sched *s);
void sched__kick(struct sched *s);
/* The read finished after the scheduler was freed: free the rest now. */
void sched__free_now(struct sched *s);
int sched__dead(struct sched *s);

/* place.c */
void sched__gpus_refresh(struct sched *s);
void sched__gpus_release(struct sched *s);
/*
 * Where MODEL fits now. For a sleeping model (waking) only its own GPUs count.
 * out receives "0,1". extra_free, when not NULL, adds bytes per device index
 * (an eviction being planned).
 */
enum sched__fit sched__place(struct sched *s, const char *model, char *out, size_t outlen,
                             const uint64_t *extra_free, char **why);
/* Bytes per GPU the model's eviction would give back, and on which devices. */
uint64_t sched__per_gpu(const struct config_model *m);
int sched__on_gpu(const char *gpus, int index);

#endif
