#ifndef YARD_CONFIG_CONFIG_H
#define YARD_CONFIG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/*
 * The YAML config, loaded and validated in one step. Keys are the ones
 * docs/config.md lists. Every error is "FILE:LINE:COL: message", names the key and, for
 * an unknown key, suggests the closest valid one. A config with any error is
 * refused as a whole: config_load returns NULL and nothing is started.
 */

enum config_restart { CONFIG_RESTART_NEVER = 0, CONFIG_RESTART_ON_FAILURE };
enum config_weights { CONFIG_WEIGHTS_RETAIN = 0, CONFIG_WEIGHTS_OFFLOAD, CONFIG_WEIGHTS_DISCARD };
enum config_process {
    CONFIG_PROCESS_STOP = 0,
    CONFIG_PROCESS_KEEP_RUNNING,
    CONFIG_PROCESS_CUDA_SUSPEND,
    CONFIG_PROCESS_CHECKPOINT,
};

struct config_kv {
    char *key;
    char *value;
};

struct config_model {
    char *name;
    char *engine;   /* "vllm" | "sglang" | "llamacpp" | "generic" */
    char *cmd;      /* as written, macros not yet expanded */
    char *model_id; /* key "model": what ${MODEL} expands to; defaults to name */
    char **aliases;
    size_t n_aliases;
    struct config_kv *env;
    size_t n_env;
    char *cwd;         /* NULL: the daemon's working directory */
    char *stop_cmd;    /* how to stop it (a container: "docker stop ${NAME}"); NULL: signals */
    int port;          /* 0: auto, from start_port */
    int gpu_count;     /* "gpus: 2" */
    int *gpu_list;     /* "gpus: [0, 1]" */
    size_t n_gpu_list; /* gpu_count == n_gpu_list when a list is given */
    uint64_t vram;     /* bytes; 0 = not declared */
    uint64_t ttl_ms;   /* 0 = never unload */
    uint64_t startup_timeout_ms;
    uint64_t stop_timeout_ms;
    enum config_restart restart;
    int max_restarts;        /* bounded attempts for restart: on-failure (default 5) */
    int concurrency;         /* 0 = unlimited */
    int replicas;            /* up to this many instances (1..CONFIG_REPLICAS_MAX, default 1) */
    uint64_t scale_after_ms; /* the oldest request's wait that starts another replica */
    enum config_weights evict_weights;
    enum config_process evict_process;
    char *pod;    /* the first host of hosts when it is a pod; NULL: local first */
    char **hosts; /* hosts: (or pod:) the ordered preference; NULL: [local] */
    size_t n_hosts;
    char *health_path; /* generic engine: probe path (default "/health") */
    int health_status; /* generic engine: expected status (default 200) */
    /*
     * filters: what the router changes in a request's JSON body before the
     * engine sees it (docs/router.md, "Filters"): top-level members removed,
     * then set_params (a JSON object's text) merged in, then the set for the
     * name the client asked for (the model's or one of params_by_id's keys,
     * which are aliases too). NULLs and 0s: the body passes untouched.
     */
    char **strip_params;
    size_t n_strip_params;
    char *set_params;               /* JSON object text, or NULL */
    struct config_kv *params_by_id; /* name -> JSON object text */
    size_t n_params_by_id;
    int line, col; /* position of the model's key, for messages */
};

#define CONFIG_REPLICAS_MAX 64
/* Instance slots of a model: its replicas and one fallback (config_model_slots). */
#define CONFIG_INSTANCES_MAX (CONFIG_REPLICAS_MAX + 1)
#define CONFIG_SCALE_AFTER_MS 2000 /* scale_after's default */

struct config_group {
    char *name;
    int exclusive;
    char **members;
    size_t n_members;
};

/* pods: { NAME: { setup | setup_file } }: what `yard pod setup NAME` runs on the pod. */
struct config_pod {
    char *name;       /* [A-Za-z0-9._-], 1..64 bytes, not starting with '.' (a pod's name) */
    char *setup;      /* setup: the script's text, or NULL */
    char *setup_file; /* setup_file: the path, resolved against the config's dir, or NULL */
    int line, col;    /* position of the pod's key, for messages */
};

/* clouds.NAME.strictness: the floor of the offers a cloud may rent (docs/cloud.md). */
enum config_strictness {
    CONFIG_STRICTNESS_STRICT = 0,
    CONFIG_STRICTNESS_BALANCED,
    CONFIG_STRICTNESS_AGGRESSIVE,
};

/* One value of a cloud's filter, typed as the YAML wrote it. */
enum config_value_type {
    CONFIG_VALUE_STRING = 0, /* quoted, or plain text that is no number, boolean or null */
    CONFIG_VALUE_NUMBER,
    CONFIG_VALUE_BOOL,
    CONFIG_VALUE_NULL,
};

struct config_value {
    enum config_value_type type;
    char *text; /* as written */
    double number;
    int boolean;
};

/*
 * One condition of clouds.NAME.filters on an offer's field: `field: VALUE`
 * is eq, `field: [A, B]` is in, `field: {op: VALUE}` any op of the API
 * (eq neq gt gte lt lte in notin; in and notin take a list).
 */
struct config_cloud_filter {
    char *field;
    char *op;
    struct config_value *values;
    size_t n_values;
    int is_list; /* in, notin: values is the list */
};

/* How long a bad-host entry of a cloud lasts unless bad_host_ttl says otherwise: 7d. */
#define CONFIG_CLOUD_BAD_HOST_TTL_DEFAULT_MS (7ull * 24 * 3600 * 1000)

/* clouds: { NAME: {...} }: a GPU marketplace yard rents machines from (docs/cloud.md). */
struct config_cloud {
    char *name;     /* a host name models list in hosts:/pod:; the pod rule, not local or a pod */
    char *provider; /* "vast" */
    char *api_key;  /* as written; config_cloud_api_key expands ${env.VAR} */
    char *url;      /* the API's base URL, no trailing '/'; default https://console.vast.ai */
    enum config_strictness strictness; /* default balanced */
    double max_price;                  /* $/hour per machine, storage included (dph_total) */
    int max_machines;                  /* machines rented at once, default 1 */
    int max_tries;                     /* offers tried for one need, default 5 */
    char *image;                       /* the container image the machine runs */
    uint64_t disk;                     /* bytes, default 60GiB */
    char *ssh_key; /* private key path (~ and relative paths resolved); KEY.pub is read too */
    char *setup;   /* a script run on a new machine, or NULL */
    struct config_cloud_filter *filters;
    size_t n_filters;
    uint64_t idle_release_ms; /* destroy a machine that ran nothing this long, default 30m */
    int release_on_exit;      /* destroy the machines when the daemon stops, default false */
    /* deadlines: of each step of a machine's start (docs/cloud.md, "Deadlines") */
    uint64_t deadline_running_ms; /* created to running, default 15m */
    uint64_t deadline_ssh_ms;     /* running to ssh answering, default 5m */
    uint64_t deadline_setup_ms;   /* the cloud's setup script, default 1h */
    uint64_t deadline_ready_ms;   /* an engine started there to ready; 0 (the default): none */
    uint64_t bad_host_ttl_ms;     /* a bad-host entry (not by hand) expires after; 0 never; 7d */
    int line, col;                /* position of the cloud's key, for messages */
};

/*
 * slurm: { NAME: {...} }: a Slurm cluster whose jobs run models
 * (docs/slurm.md). Every key is optional.
 */
struct config_slurm {
    char *name; /* a host name models list in hosts:/pod:; the pod rule, not local, a pod or a cloud
                 */
    char *login;      /* the ssh command line to the login node; NULL: sbatch runs here */
    char *partition;  /* NULL: the cluster's default */
    char *account;    /* NULL: the user's default */
    char *qos;        /* NULL: the default */
    uint64_t time_ms; /* the job's limit (--time, whole minutes up); 0: the partition's */
    char **sbatch;    /* more sbatch options, each one word as '--constraint=a100' */
    size_t n_sbatch;
    uint64_t renew_before_ms; /* submit a replacement this long before the limit; 0: never */
    uint64_t poll_ms;         /* how often the queue is read, default 10s */
    int line, col;            /* position of the cluster's key, for messages */
};

/* sessions.idle.action: what an idle session becomes (docs/sessions.md). */
enum config_idle_action { CONFIG_IDLE_STOP = 0, CONFIG_IDLE_PAUSE };
/* sessions.isolation: bubblewrap around every command, or none (a plain directory). */
enum config_isolation { CONFIG_ISOLATION_BWRAP = 0, CONFIG_ISOLATION_NONE };

/* sessions: the pool of work environments for agents (docs/sessions.md). */
struct config_sessions {
    int enabled;                         /* the config has a sessions: section */
    char *root;                          /* volumes' directory; NULL: STATE_DIR/sessions */
    int max_sessions;                    /* default 32 */
    uint64_t idle_after_ms;              /* idle.after, default 15m; 0: never idle */
    enum config_idle_action idle_action; /* idle.action, default stop */
    uint64_t backup_after_ms;            /* 0: no backups (needs backup_dir when set) */
    char *backup_dir;                    /* NULL unless backup_after is set */
    uint64_t prune_after_ms; /* volume deleted this long after it stopped, 24h; 0: never */
    char **shell;            /* argv the command is appended to, default sh -c */
    size_t n_shell;
    struct config_kv *env; /* the commands' whole environment besides PATH, HOME and TERM */
    size_t n_env;
    char *bootstrap;                 /* run once in a new volume, or NULL */
    char *nix_profile;               /* a nix profile entered before each command, or NULL */
    enum config_isolation isolation; /* default bwrap */
    int network;                     /* commands may reach the network, default false */
    uint64_t limit_memory;           /* limits.memory bytes; 0: no limit */
    int limit_pids;                  /* limits.pids; 0: no limit */
    double limit_cpu;                /* limits.cpu in CPUs; 0: no limit */
    char *user;                      /* the user commands run as, or NULL: the daemon's */
    int line, col;                   /* position of the sessions: key, for messages */
};

struct config_gpu {
    int index;
    char *name;
    uint64_t memory; /* bytes */
};

struct config__index; /* the module's table of names and aliases (internal.h) */

/* tools.checkpoint_store: CRIU images kept in S3 too (docs/checkpoint.md). */
struct config_ckpt_store {
    char *url;          /* "http(s)://host[:port][/path]", no trailing slash */
    char *bucket;       /* an S3 bucket's name */
    char *prefix;       /* "" or ending in '/' */
    int keep;           /* complete generations kept per model, default 2 */
    uint64_t part_size; /* multipart part size, default 16MiB (5MiB at least) */
};

struct config {
    char *path;
    /*
     * What loads but is likely a mistake ("FILE:LINE:COL: warning: ..."), in
     * the order found: yard check prints them, yard serve logs them.
     */
    char **warnings;
    size_t n_warnings;
    char *listen_host; /* default "127.0.0.1" */
    int listen_port;   /* default 8080 */
    char **api_keys;
    size_t n_api_keys;
    char **admin_keys; /* admin_keys: needed for the dashboard's actions; NULL when none */
    size_t n_admin_keys;
    int ui;        /* ui: GET /ui/ and its API (default 1) */
    int gpus_auto; /* "gpus: auto" (the default) */
    struct config_gpu *gpus;
    size_t n_gpus;
    uint64_t default_ttl_ms;             /* default 0 (never) */
    uint64_t default_startup_timeout_ms; /* default 10m */
    uint64_t default_stop_timeout_ms;    /* default 10s */
    int start_port;                      /* default 5800 */
    int router_max_queue;                /* default 256 */
    uint64_t router_max_wait_ms;         /* default 300s */
    char *router_policy;                 /* "fifo" | "cost_aware" | "time_slice" */
    uint64_t router_coalesce_ms;         /* cost_aware: longest wait to batch, default 2s */
    double router_amortization; /* cost_aware: queued requests per second of switch cost, 0.5 */
    int router_max_loaded;      /* models ready at once, 0 = no limit */
    uint64_t router_max_body;   /* request body bytes, default 32MiB (413) */
    uint64_t router_max_header; /* request header bytes, default 32KiB (431) */
    uint64_t router_header_timeout_ms; /* to receive a request's head, default 10s */
    uint64_t router_idle_timeout_ms;   /* idle keep-alive, default 60s */
    int router_max_connections;        /* default 10000 */
    uint64_t router_body_timeout_ms;   /* to receive a request's body after its head, 60s */
    uint64_t router_send_timeout_ms;   /* for a client to take some of a waiting answer, 60s */
    uint64_t router_max_buffered;      /* response bytes queued for all clients, 64MiB */
    uint64_t router_max_per_client;    /* router.max_buffered_per_client, 256KiB */
    uint64_t log_max_bytes;            /* per-model log cap before rotation, default 10MiB */
    size_t events_keep;                /* events.keep: events kept, default 10000 */
    uint64_t events_max_age_ms;        /* events.max_age: older ones go, default 7d */
    char *gpu_ledger;                  /* declared GPUs' used memory (mock engines), or NULL */
    char *catalog;                     /* a model catalog replacing the built-in one, or NULL */
    char *tool_cuda_checkpoint;        /* tools.cuda_checkpoint, default "cuda-checkpoint" */
    char *tool_criu;                   /* tools.criu, default "criu" */
    char *tool_nvidia_smi;             /* tools.nvidia_smi, NULL: "nvidia-smi" from PATH */
    int keep_checkpoints;              /* tools.keep_checkpoints: keep CRIU images after restore */
    struct config_ckpt_store *ckpt_store; /* tools.checkpoint_store, or NULL */
    struct config_model *models;
    size_t n_models;
    struct config_group *groups;
    size_t n_groups;
    struct config_pod *pods; /* pods: per-pod settings (setup), in file order */
    size_t n_pods;
    struct config_cloud *clouds; /* clouds:, in file order */
    size_t n_clouds;
    struct config_slurm *slurm; /* slurm:, in file order */
    size_t n_slurm;
    struct config_sessions sessions; /* sessions:; enabled is 0 without the section */
    struct config__index *index;     /* names and aliases -> model, for config_find_model */
};

struct config_errors {
    char **msgs; /* each "FILE:LINE:COL: message" */
    size_t n;
    size_t cap; /* room in msgs; 0 when the caller allocated exactly n */
};

/*
 * Loads and validates FILE. Returns a new config the caller frees with
 * config_free, or NULL with every error appended to errs (which the caller
 * releases with config_errors_release). A missing or unreadable file is one
 * error naming the path.
 */
struct config *config_load(const char *path, struct config_errors *errs);
/* The largest config file read: config_load refuses a larger one. */
#define CONFIG_FILE_MAX (16u << 20)
/* As config_load, from memory; name is used in messages. */
struct config *config_parse(const char *text, size_t len, const char *name,
                            struct config_errors *errs);
void config_free(struct config *cfg);
void config_errors_release(struct config_errors *errs);

/*
 * A valid model name (docs/config.md, "Names") made from arbitrary text, a
 * file name say: each run of bytes a name cannot hold (spaces, '/', every
 * byte of a non-ASCII character) becomes one '-', leading '.' and '-' and
 * trailing '-' and '.' go, and the result is cut to the longest a name may
 * be. Returns a new string the caller frees, or NULL when nothing of s can
 * be kept ("...", text without one ASCII letter or digit).
 */
char *config_name_from(const char *s, size_t len);

/* Finds a model by name or alias (one hash lookup); NULL if none. */
const struct config_model *config_find_model(const struct config *cfg, const char *name);
/* Finds a pod's settings by name; NULL if the config has none for it. */
const struct config_pod *config_find_pod(const struct config *cfg, const char *name);
/* Finds a cloud by name; NULL if the config has none of that name. */
const struct config_cloud *config_find_cloud(const struct config *cfg, const char *name);
/* Finds a Slurm cluster by name (NULL: none, also for a NULL cfg or name). */
const struct config_slurm *config_find_slurm(const struct config *cfg, const char *name);
/* "stop" or "pause". */
const char *config_idle_action_name(enum config_idle_action a);
/* "bwrap" or "none". */
const char *config_isolation_name(enum config_isolation i);
/* "strict", "balanced" or "aggressive". */
const char *config_strictness_name(enum config_strictness s);
/*
 * The cloud's API key with ${env.VAR} expanded from the daemon's
 * environment. Returns a new string the caller frees, or NULL with a
 * one-line message in err (a variable that is not set, or set empty).
 */
char *config_cloud_api_key(const struct config_cloud *c, char *err, size_t errlen);
/*
 * Where host (NULL: "local") stands in m's preference: 0 for the first, -1
 * when m does not list it (a model without hosts: or pod: lists local alone).
 */
int config_model_host_rank(const struct config_model *m, const char *host);
/* The same over a list of hosts (an instance spec's). */
int config_host_rank(char *const *hosts, size_t n_hosts, const char *host);
/*
 * How many instances m may have: its replicas, plus one fallback (slot
 * m->replicas) when it lists more than one host, which serves while the host
 * of its first instance does not answer (docs/sched.md, "Hosts and fallback").
 */
int config_model_slots(const struct config_model *m);

/*
 * What a reload from a to b changes outside the models: *applied gets the
 * keys that differ and take effect at once ("router.max_body,clouds"),
 * *restart those that only a restart applies ("listen", "slurm", "gpus",
 * "gpu_ledger", "tools.nvidia_smi", "sessions"). Both are new strings the
 * caller frees, "" when none.
 */
void config_reload_changes(const struct config *a, const struct config *b, char **applied,
                           char **restart);
/*
 * Moves the keys read only when the daemon starts (gpus, gpu_ledger,
 * tools.nvidia_smi, sessions) from the running config to next, which
 * replaces it: the running config keeps saying what runs, so the next
 * reload reports a change that still waits for a restart.
 */
void config_keep_start_only(struct config *running, struct config *next);

/*
 * Splits a command line into argv with shell-like quoting ('...', "...",
 * backslash escapes; no globbing, no variables, no shell). Returns a new
 * NULL-terminated array freed with config_argv_free, or NULL with a message
 * in err (unterminated quote, empty command).
 */
char **config_split_argv(const char *cmd, char *err, size_t errlen);
void config_argv_free(char **argv);

/* A command template and what its macros read: a model's, or an instance spec's. */
struct config_cmd {
    const char *cmd;      /* as written */
    const char *name;     /* ${NAME} */
    const char *model_id; /* ${MODEL}; NULL: name */
    const struct config_kv *env;
    size_t n_env; /* ${env.VAR} looks here first, then in the daemon's environment */
};
/* The command template of model m (pointing into m). */
struct config_cmd config_model_cmd(const struct config_model *m);

/*
 * Expands ${PORT} ${NAME} ${MODEL} ${GPUS} ${env.VAR} in c's cmd and
 * splits it; ${API_KEY} stays as written (the supervisor fills in the
 * engine's key at start). gpus is the comma-separated list of GPU indexes
 * ("" if none).
 * Returns a new argv (config_argv_free) or NULL with a message in err (an
 * unknown macro, an unset ${env.VAR}).
 */
char **config_expand_cmd(const struct config_cmd *c, int port, const char *gpus, char *err,
                         size_t errlen);

#endif
