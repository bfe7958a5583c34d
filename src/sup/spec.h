#ifndef YARD_SUP_SPEC_H
#define YARD_SUP_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

/*
 * What an instance is built from (docs/architecture.md, "Instances"): a
 * command template and everything the supervisor needs to run, watch and
 * evict its process. Nothing in it points into the config: a configured
 * model's comes from sup_spec_of_model, a reload builds a new one, and a
 * caller without a model (the session pool, Slurm) fills one itself. The
 * supervisor reads the spec, never a model.
 */

/* How an instance's process is watched. */
struct sup_watch {
    char *health_path; /* the readiness and health path; NULL: the adapter's */
    int health_status; /* the status that means healthy */
    int fixed_port;    /* the port every start uses; 0: one is chosen per start */
    uint64_t startup_timeout_ms;
    uint64_t stop_timeout_ms;
    int restart_on_failure; /* a failure starts it again, after a backoff */
    int max_restarts;       /* failures in a row restarted at most */
};

struct sup_spec {
    char *name;     /* the instance's name; ${NAME} */
    char *model_id; /* ${MODEL}; NULL: the name */
    char *engine;   /* its engine adapter ("generic", "vllm" ...) */
    char *cmd;      /* the command template (config_expand_cmd); NULL: nothing to start */
    char *stop_cmd; /* how to stop it, a template as cmd (a container); NULL: signals only */
    struct config_kv *env;
    size_t n_env;
    char *cwd;    /* NULL: the daemon's working directory */
    char *gpus;   /* the GPUs of a start nobody placed ("0,1"; "" none) */
    char *pod;    /* the host of a start not placed elsewhere; NULL: local */
    char **hosts; /* the host preference; what runs on a host listed here stays */
    size_t n_hosts;
    int replicas;    /* instances it may run at once */
    int slots;       /* replicas, and one fallback when it has more than one host */
    int sleep_level; /* its eviction sleeps the engine at this level; 0: never */
    int suspends;    /* its eviction suspends the tree with cuda-checkpoint */
    int checkpoints; /* its eviction checkpoints the tree with CRIU */
    struct sup_watch watch;
};

/* The spec of configured model m (everything copied: m may be freed after). */
void sup_spec_of_model(const struct config_model *m, struct sup_spec *out);
/* A deep copy of src into dst. */
void sup_spec_copy(struct sup_spec *dst, const struct sup_spec *src);
/* Frees what sp holds and zeroes it. */
void sup_spec_release(struct sup_spec *sp);
/*
 * Where host (NULL: local) is in sp's preference: 0 for the first, -1 when
 * not listed. Without a list, local alone is listed.
 */
int sup_spec_host_rank(const struct sup_spec *sp, const char *host);
/*
 * Nonzero when a and b start the same process: engine, cmd, model, cwd,
 * health, port, GPUs and env (a set). The preference and the eviction are
 * not compared (the expanded argv is, where eviction changes it).
 */
int sup_spec_same_process(const struct sup_spec *a, const struct sup_spec *b);
/*
 * What differs between a and b, for a restart's reason: the keys ("cmd,
 * env", "hosts"), "eviction" when nothing else does. A new string.
 */
char *sup_spec_diff(const struct sup_spec *a, const struct sup_spec *b);

#endif
