#ifndef YARD_GPU_GPU_H
#define YARD_GPU_GPU_H

#include <stddef.h>
#include <stdint.h>

/*
 * The GPU inventory: per GPU its index, UUID, name, total/used/free memory and
 * the processes holding memory on it. Sources, in order:
 *   - GPUs declared in the config (`gpus: [{index, name, memory}]`): CPU-only
 *     hosts and tests. Used memory comes from the mock engine's ledger file
 *     (`gpu_ledger:`), lines "PID GPU BYTES NAME"; lines of dead pids are stale.
 *   - NVML, loaded with dlopen("libnvidia-ml.so.1") (versioned symbols,
 *     hand-declared types; no CUDA headers needed).
 *   - `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` and
 *     `--query-compute-apps=...`.
 * Reading may block (nvidia-smi takes tens of milliseconds): the daemon calls
 * gpu_read from the libuv thread pool, never on the loop.
 */

struct gpu_proc {
    int pid;
    uint64_t used; /* bytes; UINT64_MAX when the driver does not say */
    char name[64]; /* process name when known ("VLLM::EngineCore") */
};

struct gpu_dev {
    int index;
    char uuid[96];
    char name[96];
    uint64_t total; /* bytes */
    uint64_t used;
    uint64_t free;
    struct gpu_proc *procs;
    size_t n_procs;
};

struct gpu_inventory {
    struct gpu_dev *devs;
    size_t n;
    const char *source; /* "declared", "nvml", "nvidia-smi" or "none" */
};

struct gpu_decl {
    int index;
    const char *name;
    uint64_t memory;
};

struct gpu;

/*
 * A source: declared GPUs (n_decl > 0; ledger may be NULL) or, with none
 * declared, NVML then nvidia-smi (nvidia_smi: the program to run, NULL for
 * "nvidia-smi" from PATH). Never NULL; a host without GPUs reads as empty.
 */
struct gpu *gpu_new(const struct gpu_decl *decl, size_t n_decl, const char *ledger,
                    const char *nvidia_smi);
void gpu_free(struct gpu *g);

/*
 * Reads the inventory into out (release with gpu_inventory_release).
 * Returns 0, or a negative errno with *err a new message the caller frees
 * (nvidia-smi failed, NVML error). Thread-safe for one caller at a time.
 */
int gpu_read(struct gpu *g, struct gpu_inventory *out, char **err);
void gpu_inventory_release(struct gpu_inventory *inv);

/*
 * The inventory as the admin socket's answer: {"source", "gpus": [{"index",
 * "uuid", "name", "total", "used", "free", "processes": [{"pid", "used",
 * "name", "model": null}]}]} (bytes; "used" null when unknown). A new
 * reference; never NULL. Declared as void * so this header needs no jansson.
 */
void *gpu_inventory_json(const struct gpu_inventory *inv);

/* Parsers, exposed for tests. Return 0 or -EINVAL (with *err) on a bad line. */
/* Whether the comma list of GPU indexes ("0,2", as in CUDA_VISIBLE_DEVICES) holds index. */
int gpu_list_has(const char *list, int index);

/*
 * The GPUs as a pod's record keeps them: [{index, name, memory_total,
 * memory_used}], bytes, null when the driver does not say. A new json_t
 * reference (void * as above); never NULL.
 */
void *gpu_record_json(const struct gpu_inventory *inv);
/*
 * The inverse, from the record's JSON text: out (the caller releases it with
 * gpu_inventory_release; empty on failure); memory not said is 0 total and
 * UINT64_MAX used. 0, or -EINVAL when text is not such an array.
 */
int gpu_record_parse(const char *text, struct gpu_inventory *out);

int gpu__parse_smi_gpus(const char *csv, struct gpu_inventory *out, char **err);
int gpu__parse_smi_apps(const char *csv, struct gpu_inventory *inv, char **err);
int gpu__parse_ledger(const char *text, struct gpu_inventory *inv);

/* ---- test hooks, process helpers and module internals ---- */

/*
 * Loads NVML from lib (a path or soname) instead of libnvidia-ml.so.1 /
 * libnvidia-ml.so; NULL or "" turns NVML off, so that nvidia-smi is used.
 * For tests and for hosts where NVML misbehaves; call it before the first
 * gpu_read. Returns 0, or -EBUSY once NVML has been loaded.
 */
int gpu_set_nvml(struct gpu *g, const char *lib);

/* Internals shared by the files of gpu/, not for use outside it. */
struct gpu__nvml;
/*
 * Loads and initialises NVML from lib (NULL: the default names). Returns 0;
 * -ENOENT when the library cannot be loaded (no NVML on this host); another
 * negative errno with *err when it loads but cannot be initialised.
 */
int gpu__nvml_open(const char *lib, struct gpu__nvml **out, char **err);
int gpu__nvml_read(struct gpu__nvml *n, struct gpu_inventory *out, char **err);
void gpu__nvml_close(struct gpu__nvml *n);
/*
 * Runs nvidia-smi's two queries. Returns 0; -ENOENT when the program does not
 * exist (nothing read); another negative errno with *err.
 */
int gpu__smi_read(const char *prog, struct gpu_inventory *out, char **err);

/* What a program run by gpu__run_capture did. */
struct gpu__capture {
    char *out; /* stdout, NUL-terminated; NULL when it could not start */
    size_t out_len;
    char *err;  /* stderr, NUL-terminated */
    int status; /* exit status, or 128 + signal */
};
/*
 * Runs argv (argv[0] looked up in PATH when it has no '/') with stdin on
 * /dev/null, collecting at most max bytes of each of stdout and stderr, and
 * kills it (SIGKILL) after timeout_ms. Returns 0 when it ran to the end
 * (whatever its status); -ENOENT/-EACCES when it could not be started;
 * -ETIMEDOUT when it was killed; -EMSGSIZE when it wrote more than max.
 * cap is filled in every case but the start failure; release it with
 * gpu__capture_release.
 */
int gpu__run_capture(char *const argv[], uint64_t timeout_ms, size_t max, struct gpu__capture *cap);
void gpu__capture_release(struct gpu__capture *cap);
/* Writes pid's process name (cmdline's argv[0], else comm) into name; "" when unknown. */
void gpu__proc_name(int pid, char *name, size_t len);
/* Adds a process to dev (copying name, with control characters replaced). */
void gpu__dev_add_proc(struct gpu_dev *dev, int pid, uint64_t used, const char *name);

#endif
