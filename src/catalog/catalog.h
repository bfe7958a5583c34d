#ifndef YARD_CATALOG_CATALOG_H
#define YARD_CATALOG_CATALOG_H

#include <stddef.h>
#include <stdint.h>

/*
 * The model catalog (docs/catalog.md): known open models and, for each, the
 * ways to run it, each a number of GPUs, the GPU types it needs, the memory it
 * needs on each GPU and the engine's arguments. It answers "which known models
 * fit where" (`yard models`). The JSON is shaped like pi's models.json:
 *
 *   {"models": {"<HF id>": {"name", "engine"?, "notes"?, "configs": [
 *       {"gpu_count", "gpu_types"?, "vram"?, "args"?, "env"?, "notes"?}]}}}
 *
 * pi's own spellings gpuCount and gpuTypes are accepted too. A built-in
 * catalog (src/catalog/default.json) is compiled into yard; the config key
 * `catalog: FILE` replaces it.
 */

#define CATALOG_MAX_BYTES (4u << 20) /* a catalog file larger than this is refused */
#define CATALOG_MAX_MODELS 1024
#define CATALOG_MAX_CONFIGS 64 /* per model */
#define CATALOG_MAX_GPUS 64    /* a config's gpu_count */
#define CATALOG_MAX_ARGS 256   /* per config */

struct catalog_kv {
    char *key;
    char *value;
};

/* One way to run a model. */
struct catalog_config {
    int gpu_count;    /* 1 to CATALOG_MAX_GPUS */
    char **gpu_types; /* substrings of GPU names ("H100"); none: any GPU */
    size_t n_gpu_types;
    uint64_t vram; /* bytes needed on each GPU; 0: not said */
    char **args;   /* the engine's arguments */
    size_t n_args;
    struct catalog_kv *env;
    size_t n_env;
    char *notes; /* NULL when none */
};

struct catalog_model {
    char *id;     /* the Hugging Face id, "Qwen/Qwen2.5-7B-Instruct" */
    char *name;   /* for people; the id when not given */
    char *engine; /* "vllm" (default), "sglang", "llamacpp" or "generic" */
    char *notes;  /* NULL when none */
    struct catalog_config *configs;
    size_t n_configs; /* at least 1 */
};

struct catalog {
    char *source; /* the file it came from, or "built-in" */
    struct catalog_model *models;
    size_t n_models; /* at least 1, in the file's order */
};

/* One GPU of a host, as the fit rules see it. */
struct catalog_gpu {
    const char *name; /* "NVIDIA H100 80GB HBM3"; NULL or "" when unknown */
    uint64_t memory;  /* total bytes; 0 when unknown (any vram then passes) */
};

/*
 * Parses and validates a catalog from text (len bytes, need not end in NUL);
 * source names it in messages and is kept in the result. Returns a new
 * catalog the caller frees with catalog_free, or NULL with *err a new
 * one-line message the caller frees: "SOURCE:LINE:COL: not valid JSON: ..."
 * for JSON that does not parse (a duplicate key too), "SOURCE: models[\"id\"]
 * .configs[0].gpu_count: ..." for a value that is wrong.
 */
struct catalog *catalog_parse(const char *text, size_t len, const char *source, char **err);

/*
 * Reads and parses the catalog file path (at most CATALOG_MAX_BYTES). Returns
 * as catalog_parse; a file that cannot be read is "cannot read catalog
 * 'PATH': REASON".
 */
struct catalog *catalog_load(const char *path, char **err);

/*
 * The built-in catalog, parsed. Returns a new catalog (catalog_free), or
 * NULL with *err should the built-in text be broken (a test catches that).
 */
struct catalog *catalog_load_default(char **err);

/* The built-in catalog's JSON text, NUL-terminated; *len (may be NULL) its length. */
const char *catalog_default_text(size_t *len);

void catalog_free(struct catalog *cat);

/*
 * Whether model m can run on a host with these GPUs, and how. A config fits
 * when the host has gpu_count GPUs each of which matches one of gpu_types
 * (a case-insensitive substring of the GPU's name with a leading "NVIDIA "
 * removed; no types: any GPU) and has at least vram bytes (unknown memory
 * passes). Of the configs that fit, the one with the fewest GPUs wins (it
 * leaves room for other models), then the first listed.
 *
 * host is the word for the host in messages ("pod", "host"). Returns 0 with
 * *config the chosen config (pointing into m); or -ENOSPC when none fits,
 * with *why a new string the caller frees saying why, for the config that
 * came closest: "needs 8 GPUs, pod has 2", "needs H100 or H200, pod has
 * 'NVIDIA A10G'", "needs 70 GiB per GPU, GPUs have 24 GiB".
 */
int catalog_fit(const struct catalog_model *m, const struct catalog_gpu *gpus, size_t n_gpus,
                const char *host, const struct catalog_config **config, char **why);

#endif
