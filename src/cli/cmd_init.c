/*
 * `yard init [--dir PATH]... [-c FILE] [--force]`: writes a commented starter
 * yard.yaml from what this machine has: its GPUs (gpu/: NVML, else
 * nvidia-smi), the engines on PATH (llama-server, vllm, sglang) and the GGUF
 * files under the given directories, each a llama-server model. It never
 * overwrites a file without --force, and says what it found and where it
 * wrote. The file it writes passes `yard check`; the commented examples
 * (delete the '#' at the start of each line) do too. See docs/cli.md.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/buf.h"
#include "base/units.h"
#include "base/utf8.h"
#include "cli/cli.h"
#include "config/config.h"
#include "gpu/gpu.h"

#define MAX_DIRS 64
#define MAX_DEPTH 16
#define MAX_ENTRIES 200000 /* directory entries looked at, over all --dir */
#define MAX_MODELS 1000
#define MAX_NOTES_SHOWN 20
#define GiB (1024ull * 1024 * 1024)

static const char usage[] =
    "usage: yard init [--dir PATH]... [-c FILE] [--force]\n"
    "\n"
    "writes a commented starter config (default ./yard.yaml; -c - prints it) from\n"
    "what this machine has: its GPUs (NVML, else nvidia-smi), the engines on PATH\n"
    "(llama-server, vllm, sglang) and the GGUF files under each --dir (searched\n"
    "with their subdirectories), each one a llama-server model named after its\n"
    "file. vLLM and SGLang get commented examples. An existing file is kept\n"
    "unless --force is given. A directory may also be given without --dir.\n"
    "\n"
    "options:\n"
    "  --dir PATH          where GGUF files are (may be given several times)\n"
    "  --force             overwrite the config file when it exists\n";

/* One GGUF file (or the first part of a split one) that becomes a model. */
struct found_model {
    char *name;
    char *path;    /* absolute, valid UTF-8 */
    uint64_t size; /* bytes, over all parts */
    int parts;     /* 1, or how many files a split model has */
    dev_t dev;
    ino_t ino;
};

struct scan {
    struct found_model *models;
    size_t n_models;
    char **notes; /* "'PATH': why it is not a model", printable */
    size_t n_notes;
    size_t n_files;   /* .gguf files seen */
    size_t n_entries; /* directory entries looked at */
    int stopped;      /* MAX_ENTRIES or MAX_MODELS reached */
};

struct engines {
    char *llama_server, *vllm, *sglang; /* absolute paths, NULL when not on PATH */
};

/* ---- text ---- */

/* The code point of the valid sequence of len bytes at p. */
static unsigned long code_point(const unsigned char *p, size_t len)
{
    static const unsigned char lead_mask[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
    unsigned long cp = p[0] & lead_mask[len];
    for (size_t i = 1; i < len; i++)
        cp = (cp << 6) | (p[i] & 0x3f);
    return cp;
}

/* Characters YAML does not take as they are, or reads as a line break. */
static int yaml_special(unsigned long cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0xfffe || cp == 0xffff;
}

/*
 * A copy of s for a terminal or a YAML comment: each byte that is not valid
 * UTF-8 and each character yaml_special names becomes '?'. The caller frees it.
 */
static char *printable(const char *s)
{
    size_t n = strlen(s);
    char *out = xmalloc(n + 1), *o = out;
    const unsigned char *p = (const unsigned char *)s;
    while (n > 0) {
        size_t len = utf8_seq_len(p, n);
        if (len == 0 || yaml_special(code_point(p, len))) {
            *o++ = '?';
            len = len ? len : 1;
        } else {
            memcpy(o, p, len);
            o += len;
        }
        p += len;
        n -= len;
    }
    *o = '\0';
    return out;
}

/* Appends s (valid UTF-8) as a YAML double-quoted scalar. */
static void yaml_quoted(struct buf *b, const char *s)
{
    buf_appends(b, "\"");
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n > 0) {
        size_t len = utf8_seq_len(p, n);
        unsigned long cp = len ? code_point(p, len) : 0xfffd;
        len = len ? len : 1;
        if (cp == '"' || cp == '\\')
            buf_printf(b, "\\%c", (char)cp);
        else if (yaml_special(cp))
            buf_printf(b, cp < 0x100 ? "\\x%02lx" : "\\u%04lx", cp);
        else
            buf_append(b, p, len);
        p += len;
        n -= len;
    }
    buf_appends(b, "\"");
}

/*
 * Appends path as one word of a model's cmd: as it is when it holds only
 * characters the cmd syntax reads as themselves, else single-quoted (each '
 * written '\'').
 */
static void cmd_word(struct buf *b, const char *path)
{
    size_t plain = strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                                "/._+-:@%,=");
    if (*path && !path[plain]) {
        buf_appends(b, path);
        return;
    }
    buf_appends(b, "'");
    for (const char *p = path; *p; p++)
        if (*p == '\'')
            buf_appends(b, "'\\''");
        else
            buf_append(b, p, 1);
    buf_appends(b, "'");
}

static char *size_text(uint64_t bytes)
{
    char tmp[32];
    return xstrdup(units_fmt_size(bytes, tmp, sizeof tmp));
}

static int ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

/* ---- engines on PATH ---- */

/* The absolute path of the program name in PATH, or NULL. The caller frees it. */
static char *find_program(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path)
        return NULL;
    char *copy = xstrdup(path), *found = NULL;
    for (char *dir = copy, *next; dir && !found; dir = next) {
        next = strchr(dir, ':');
        if (next)
            *next++ = '\0';
        /* An empty or relative entry is a directory relative to where init runs: made absolute. */
        char *abs = realpath(*dir ? dir : ".", NULL);
        if (!abs)
            continue;
        char *cand = xstrfmt("%s/%s", abs, name);
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0 &&
            utf8_valid(cand, strlen(cand)))
            found = cand;
        else
            free(cand);
        free(abs);
    }
    free(copy);
    return found;
}

/* ---- GGUF files ---- */

static void note(struct scan *sc, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(struct scan *sc, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *why = xvstrfmt(fmt, ap);
    va_end(ap);
    char *p = printable(path);
    sc->notes = xrealloc(sc->notes, (sc->n_notes + 1) * sizeof *sc->notes);
    sc->notes[sc->n_notes++] = xstrfmt("'%s': %s", p, why);
    free(p);
    free(why);
}

static int name_taken(const struct scan *sc, const char *name)
{
    for (size_t i = 0; i < sc->n_models; i++)
        if (strcmp(sc->models[i].name, name) == 0)
            return 1;
    return 0;
}

/* A model name from a file's name (without .gguf): valid, and unlike the others so far. */
static char *model_name(const struct scan *sc, const char *base, size_t len)
{
    char *name = config_name_from(base, len);
    if (!name)
        name = xstrdup("model");
    if (!name_taken(sc, name))
        return name;
    for (int k = 2;; k++) {
        char suffix[16];
        int sn = snprintf(suffix, sizeof suffix, "-%d", k);
        size_t keep = strlen(name);
        if (keep + (size_t)sn > 128)
            keep = 128 - (size_t)sn;
        char *cand = xstrfmt("%.*s%s", (int)keep, name, suffix);
        if (!name_taken(sc, cand)) {
            free(name);
            return cand;
        }
        free(cand);
    }
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/*
 * Whether base (a file name without .gguf) ends as the parts of a split model
 * do, "-00001-of-00003": *part and *of get the numbers.
 */
static int split_part(const char *base, size_t len, int *part, int *of)
{
    const char *tail = "-00000-of-00000";
    size_t tl = strlen(tail);
    if (len <= tl)
        return 0;
    const char *t = base + len - tl;
    for (size_t i = 0; i < tl; i++)
        if (tail[i] == '0' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != tail[i])
            return 0;
    *part = digits(t + 1, 5);
    *of = digits(t + 10, 5);
    return *part >= 1 && *of >= 1 && *part <= *of;
}

/* Whether the file at path starts with GGUF's magic; 0, or a negative errno when unreadable. */
static int has_gguf_magic(const char *path, int *yes)
{
    char magic[4];
    *yes = 0;
    int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, magic, sizeof magic);
    int err = n < 0 ? -errno : 0;
    close(fd);
    *yes = n == 4 && memcmp(magic, "GGUF", 4) == 0;
    return err;
}

/*
 * The size of a split model whose first part is at path (base without .gguf,
 * of parts): the sum of its parts, or 0 after a note when one is missing.
 */
static uint64_t split_size(struct scan *sc, const char *path, const char *dir, const char *base,
                           size_t len, const char *ext, int of)
{
    uint64_t total = 0;
    for (int k = 1; k <= of; k++) {
        char *part = xstrfmt("%s/%.*s-%05d-of-%05d%s", dir, (int)(len - 15), base, k, of, ext);
        struct stat st;
        int ok = stat(part, &st) == 0 && S_ISREG(st.st_mode);
        free(part);
        if (!ok) {
            note(sc, path,
                 "part %d of its %d is missing, so llama-server cannot load it; put every part "
                 "beside the first",
                 k, of);
            return 0;
        }
        total += (uint64_t)st.st_size;
    }
    return total;
}

/* A .gguf file at path (in dir, named fname): a model, a note, or nothing (a later part). */
static void consider_file(struct scan *sc, const char *dir, const char *path, const char *fname,
                          const struct stat *st)
{
    sc->n_files++;
    const char *ext = fname + strlen(fname) - 5; /* ".gguf", in the file's own case */
    size_t len = (size_t)(ext - fname);
    int part = 0, of = 0, split = split_part(fname, len, &part, &of);
    if (split && part > 1)
        return; /* counted with its first part */
    if (!utf8_valid(path, strlen(path))) {
        note(sc, path, "its path is not UTF-8, which yard.yaml cannot hold; rename it");
        return;
    }
    if (strncasecmp(fname, "mmproj", 6) == 0) {
        note(sc, path,
             "a multimodal projector, not a model; give it to its model's llama-server with "
             "--mmproj FILE");
        return;
    }
    int gguf = 0, rc = has_gguf_magic(path, &gguf);
    if (rc < 0) {
        note(sc, path, "cannot read it: %s", strerror(-rc));
        return;
    }
    if (!gguf) {
        note(sc, path, "not a GGUF file (it does not begin with 'GGUF')");
        return;
    }
    for (size_t i = 0; i < sc->n_models; i++) {
        if (sc->models[i].dev == st->st_dev && sc->models[i].ino == st->st_ino) {
            char *first = printable(sc->models[i].path);
            note(sc, path, "the same file as '%s' (model '%s')", first, sc->models[i].name);
            free(first);
            return;
        }
    }
    uint64_t size = (uint64_t)st->st_size;
    if (split && (size = split_size(sc, path, dir, fname, len, ext, of)) == 0)
        return;
    if (sc->n_models == MAX_MODELS) {
        sc->stopped = 1;
        return;
    }
    sc->models = xrealloc(sc->models, (sc->n_models + 1) * sizeof *sc->models);
    struct found_model *m = &sc->models[sc->n_models];
    m->name = model_name(sc, fname, split ? len - 15 : len);
    m->path = xstrdup(path);
    m->size = size;
    m->parts = split ? of : 1;
    m->dev = st->st_dev;
    m->ino = st->st_ino;
    sc->n_models++;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Searches dir (absolute) and its subdirectories, in name order, for .gguf
 * files. Hidden entries are skipped, and so are links to directories (they
 * can loop); links to files count.
 */
static void scan_dir(struct scan *sc, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d) {
        note(sc, dir, "cannot search it: %s", strerror(errno));
        return;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (++sc->n_entries > MAX_ENTRIES) {
            sc->stopped = 1;
            break;
        }
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        char *path =
            strcmp(dir, "/") == 0 ? xstrfmt("/%s", names[i]) : xstrfmt("%s/%s", dir, names[i]);
        struct stat st, lst;
        int is_gguf = ends_with_ci(names[i], ".gguf") && strlen(names[i]) > 5;
        if (stat(path, &st) < 0) {
            if (is_gguf)
                note(sc, path, "cannot read it: %s", strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            if (lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode))
                ; /* a link to a directory: not followed */
            else if (depth < MAX_DEPTH && !sc->stopped)
                scan_dir(sc, path, depth + 1);
            else if (depth >= MAX_DEPTH)
                note(sc, path, "deeper than %d directories; not searched (name it with --dir)",
                     MAX_DEPTH);
        } else if (S_ISREG(st.st_mode) && is_gguf && !sc->stopped) {
            consider_file(sc, dir, path, names[i], &st);
        }
        free(path);
        free(names[i]);
    }
    free(names);
}

static void scan_release(struct scan *sc)
{
    for (size_t i = 0; i < sc->n_models; i++) {
        free(sc->models[i].name);
        free(sc->models[i].path);
    }
    free(sc->models);
    for (size_t i = 0; i < sc->n_notes; i++)
        free(sc->notes[i]);
    free(sc->notes);
}

/* ---- the file ---- */

/* The vram a llama-server model is given: the file and a quarter more, plus 1GiB, in whole GiB. */
static uint64_t vram_estimate(uint64_t size)
{
    uint64_t want = size + size / 4 + GiB;
    return (want + GiB - 1) / GiB * GiB;
}

static uint64_t largest_gpu(const struct gpu_inventory *inv)
{
    uint64_t max = 0;
    for (size_t i = 0; i < inv->n; i++)
        if (inv->devs[i].total > max)
            max = inv->devs[i].total;
    return max;
}

/* A YAML key for a model name: plain when it starts with a letter or digit, else quoted. */
static void yaml_key(struct buf *b, const char *name)
{
    char c = name[0];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
        buf_appends(b, name);
    else
        yaml_quoted(b, name);
}

static void write_header(struct buf *b, const struct gpu_inventory *inv, const char *gpu_err,
                         const struct engines *eng, const struct scan *sc, int n_dirs)
{
    char host[256] = "this machine", day[32] = "";
    if (gethostname(host, sizeof host) < 0)
        snprintf(host, sizeof host, "this machine");
    host[sizeof host - 1] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm))
        strftime(day, sizeof day, "%Y-%m-%d", &tm);
    char *h = printable(host);
    buf_printf(b,
               "# A starter config that 'yard init' wrote on %s (%s) from what it found there.\n"
               "# Check it with 'yard check -c FILE'; run it with 'yard serve -c FILE'. Every key\n"
               "# is described in yard's docs/config.md. A commented-out block is used by\n"
               "# deleting the '#' at the start of each of its lines.\n#\n",
               h, day);
    free(h);
    if (inv->n > 0) {
        buf_printf(b, "# GPUs (read through %s):\n", inv->source);
        for (size_t i = 0; i < inv->n; i++) {
            char *name = printable(inv->devs[i].name);
            char *mem =
                inv->devs[i].total ? size_text(inv->devs[i].total) : xstrdup("memory unknown");
            buf_printf(b, "#   %d: %s, %s\n", inv->devs[i].index, name, mem);
            free(name);
            free(mem);
        }
    } else if (gpu_err) {
        char *e = printable(gpu_err);
        buf_printf(b, "# GPUs: none could be read: %s\n", e);
        free(e);
    } else {
        buf_appends(b, "# GPUs: none found (no NVML library, no nvidia-smi on PATH)\n");
    }
    const char *names[] = {"llama-server", "vllm", "sglang"};
    const char *paths[] = {eng->llama_server, eng->vllm, eng->sglang};
    buf_appends(b, "# Engines on PATH:");
    for (int i = 0; i < 3; i++) {
        char *p = paths[i] ? printable(paths[i]) : NULL;
        buf_printf(b, "%s %s %s", i ? "," : "", names[i], p ? p : "(not found)");
        free(p);
    }
    buf_appends(b, "\n");
    if (n_dirs == 0)
        buf_appends(b, "# GGUF files: none looked for (name their directories with 'yard init "
                       "--dir DIR')\n");
    else
        buf_printf(b, "# GGUF files: %zu found, %zu of them models (below)\n", sc->n_files,
                   sc->n_models);
    for (size_t i = 0; i < sc->n_notes && i < MAX_NOTES_SHOWN; i++)
        buf_printf(b, "#   skipped %s\n", sc->notes[i]);
    if (sc->n_notes > MAX_NOTES_SHOWN)
        buf_printf(b, "#   ... and %zu more skipped\n", sc->n_notes - MAX_NOTES_SHOWN);
    buf_appends(b, "\n");
}

static void write_top(struct buf *b, const struct gpu_inventory *inv)
{
    buf_appends(b,
                "# Where clients reach the models: the OpenAI and Anthropic APIs, /health,\n"
                "# /metrics. Another address needs a firewall or api_keys.\n"
                "listen: 127.0.0.1:8080\n"
                "# Keys clients must send as 'Authorization: Bearer KEY'; without the key, anyone\n"
                "# who reaches 'listen' may use the models:\n"
                "#api_keys: [ \"sk-change-me\" ]\n\n");
    if (inv->n > 0)
        buf_appends(b, "# The GPUs are read while yard runs (NVML, else nvidia-smi); 'yard gpus' "
                       "shows them.\ngpus: auto\n\n");
    else
        buf_appends(b,
                    "# No GPU was found: the models below run on the CPU. With GPUs, give a "
                    "model\n# 'gpus: 1' and the 'vram' it uses, and yard makes room for it.\n\n");
    buf_appends(b, "defaults:\n"
                   "  ttl: 30m              # a model idle this long is stopped (0: only when "
                   "its room is needed)\n"
                   "  startup_timeout: 10m  # a load that takes longer fails\n"
                   "  stop_timeout: 10s     # SIGTERM, then SIGKILL this much later\n\n");
}

static void write_gguf_model(struct buf *b, const struct found_model *m, const char *llama_server,
                             const struct gpu_inventory *inv)
{
    uint64_t vram = vram_estimate(m->size), max = largest_gpu(inv);
    char *size = size_text(m->size), *max_s = size_text(max);
    char *vram_s = xstrfmt("%lluGiB", (unsigned long long)(vram / GiB));
    buf_appends(b, "  # ");
    yaml_quoted(b, m->path);
    if (m->parts > 1)
        buf_printf(b, " and %d more part%s", m->parts - 1, m->parts == 2 ? "" : "s");
    buf_printf(b, ", %s\n  ", size);
    yaml_key(b, m->name);
    buf_appends(b, ":\n    engine: llamacpp\n");
    int on_gpu = inv->n > 0 && (max == 0 || vram <= max);
    /* The cmd as the loader reads it: one YAML string holding shell-like words. */
    struct buf cmd;
    buf_init(&cmd, 64 << 10);
    cmd_word(&cmd, llama_server ? llama_server : "llama-server");
    buf_appends(&cmd, " -m ");
    cmd_word(&cmd, m->path);
    buf_appends(&cmd, " --port ${PORT} -a ${NAME}");
    if (on_gpu)
        buf_appends(&cmd, " -ngl 99");
    buf_appends(b, "    cmd: ");
    yaml_quoted(b, cmd.data);
    buf_appends(b, "\n");
    buf_release(&cmd);
    if (on_gpu && max > 0)
        buf_printf(b,
                   "    gpus: 1\n"
                   "    # a guess: the file, a quarter more and 1GiB for the context ('yard gpus'\n"
                   "    # shows what it takes once it runs)\n"
                   "    vram: %s\n",
                   vram_s);
    else if (on_gpu)
        buf_appends(b, "    gpus: 1\n"
                       "    # vram: the GPU's memory is not known here; say what the model takes\n"
                       "    # so that yard can make room for it\n");
    else if (inv->n > 0)
        buf_printf(b,
                   "    # about %s: more than any GPU here (%s), so it runs on the CPU; add\n"
                   "    # -ngl N to the cmd to put N layers on a GPU\n",
                   vram_s, max_s);
    buf_appends(b, "\n");
    free(size);
    free(vram_s);
    free(max_s);
}

/*
 * A commented-out model for a Python engine: vLLM or SGLang serving a model
 * from Hugging Face. Deleting the '#' gives a model that `yard check` takes.
 */
static void write_example(struct buf *b, const char *engine, const char *prog,
                          const struct gpu_inventory *inv, const struct scan *sc)
{
    int vllm = strcmp(engine, "vllm") == 0;
    const char *want = vllm ? "qwen2.5-7b-vllm" : "qwen2.5-7b-sglang";
    char *name = model_name(sc, want, strlen(want));
    uint64_t max = largest_gpu(inv);
    char *p = printable(prog);
    buf_printf(
        b,
        "  # %s is installed (%s). A model it serves from Hugging Face or a\n"
        "  # local directory: set the model, then delete the '#' at the start of each line.\n",
        vllm ? "vLLM" : "SGLang", p);
    free(p);
    if (max > 0)
        buf_appends(b, "  # It takes half of a GPU here (the fraction in its cmd), which is "
                       "its vram.\n");
    else if (inv->n == 0)
        buf_appends(b, "  # It needs a GPU, and none was found.\n");
    buf_appends(b, "  #\n");
    buf_printf(b, "  #%s:\n", name);
    free(name);
    buf_printf(b, "  #  engine: %s\n", engine);
    struct buf cmd;
    buf_init(&cmd, 64 << 10);
    cmd_word(&cmd, prog);
    if (vllm)
        buf_appends(&cmd,
                    " serve Qwen/Qwen2.5-7B-Instruct --port ${PORT} --served-model-name ${NAME}");
    else
        buf_appends(&cmd, " serve --model-path Qwen/Qwen2.5-7B-Instruct --port ${PORT} "
                          "--served-model-name ${NAME}");
    if (max > 0)
        buf_appends(&cmd, vllm ? " --gpu-memory-utilization 0.5" : " --mem-fraction-static 0.5");
    buf_appends(b, "  #  cmd: ");
    yaml_quoted(b, cmd.data);
    buf_appends(b, "\n");
    buf_release(&cmd);
    if (inv->n > 0)
        buf_appends(b, "  #  gpus: 1\n");
    if (max > 0) {
        buf_printf(b, "  #  vram: %lluGiB\n", (unsigned long long)((max / 2 + GiB - 1) / GiB));
    }
    buf_printf(b,
               "  #  eviction: { weights: offload }  # when its GPU is needed, it %s in place\n\n",
               vllm ? "sleeps" : "frees its memory");
}

static void write_models(struct buf *b, const struct scan *sc, const struct engines *eng,
                         const struct gpu_inventory *inv)
{
    buf_appends(b, "models:\n");
    if (sc->n_models > 0 && !eng->llama_server)
        buf_appends(b, "  # llama-server is not on PATH: install llama.cpp, or write its path in "
                       "each cmd.\n\n");
    for (size_t i = 0; i < sc->n_models; i++)
        write_gguf_model(b, &sc->models[i], eng->llama_server, inv);
    if (sc->n_models == 0) {
        buf_appends(b,
                    "  # A llama-server model (GGUF files under a directory become such models\n"
                    "  # with 'yard init --dir DIR'):\n  #\n  #my-model:\n  #  engine: llamacpp\n"
                    "  #  cmd: ");
        struct buf cmd;
        buf_init(&cmd, 64 << 10);
        cmd_word(&cmd, eng->llama_server ? eng->llama_server : "llama-server");
        buf_appends(&cmd, " -m /path/to/model.gguf --port ${PORT} -a ${NAME}");
        yaml_quoted(b, cmd.data);
        buf_release(&cmd);
        buf_appends(b, "\n\n");
    }
    if (eng->vllm)
        write_example(b, "vllm", eng->vllm, inv, sc);
    if (eng->sglang)
        write_example(b, "sglang", eng->sglang, inv, sc);
}

/* ---- writing it ---- */

/* What was found, on out: the GPUs, the engines, the GGUF files and what was skipped. */
static void report(FILE *out, const struct gpu_inventory *inv, const char *gpu_err,
                   const struct engines *eng, const struct scan *sc, char **dirs, int n_dirs)
{
    if (inv->n > 0) {
        fprintf(out, "found %zu GPU%s through %s:", inv->n, inv->n == 1 ? "" : "s", inv->source);
        for (size_t i = 0; i < inv->n; i++) {
            char *name = printable(inv->devs[i].name);
            char *mem =
                inv->devs[i].total ? size_text(inv->devs[i].total) : xstrdup("memory unknown");
            fprintf(out, "%s %d: %s (%s)", i ? "," : "", inv->devs[i].index, name, mem);
            free(name);
            free(mem);
        }
        fputc('\n', out);
    } else if (gpu_err) {
        char *e = printable(gpu_err);
        fprintf(out, "found no GPU: %s\n", e);
        free(e);
    } else {
        fputs("found no GPU (no NVML library, no nvidia-smi on PATH)\n", out);
    }
    const char *names[] = {"llama-server", "vllm", "sglang"};
    const char *paths[] = {eng->llama_server, eng->vllm, eng->sglang};
    const char *sep = "found ";
    for (int i = 0; i < 3; i++) {
        if (!paths[i])
            continue;
        char *p = printable(paths[i]);
        fprintf(out, "%s%s at %s", sep, names[i], p);
        free(p);
        sep = ", ";
    }
    if (!eng->llama_server && !eng->vllm && !eng->sglang)
        fputs("found no engine on PATH (llama-server, vllm, sglang)", out);
    else
        for (int i = 0, first = 1; i < 3; i++)
            if (!paths[i]) {
                fprintf(out, "%s%s", first ? "; not on PATH: " : ", ", names[i]);
                first = 0;
            }
    fputc('\n', out);
    if (n_dirs == 0) {
        fputs("no GGUF files looked for: name the directories that hold them with --dir DIR\n",
              out);
        return;
    }
    fprintf(out, "found %zu GGUF file%s under", sc->n_files, sc->n_files == 1 ? "" : "s");
    for (int i = 0; i < n_dirs; i++) {
        char *d = printable(dirs[i]);
        fprintf(out, "%s '%s'", i ? "," : "", d);
        free(d);
    }
    fprintf(out, ": %zu model%s", sc->n_models, sc->n_models == 1 ? "" : "s");
    if (sc->n_notes)
        fprintf(out, "; skipped %zu:", sc->n_notes);
    fputc('\n', out);
    for (size_t i = 0; i < sc->n_notes; i++)
        fprintf(out, "  %s\n", sc->notes[i]);
    if (sc->stopped)
        fprintf(out,
                "stopped searching after %d directory entries or %d models; name narrower "
                "directories with --dir\n",
                MAX_ENTRIES, MAX_MODELS);
}

int cmd_init(int argc, char **argv, struct app *app)
{
    const char *dir_values[MAX_DIRS];
    struct cli_opt opts[] = {
        {.name = "dir", .kind = CLI_OPT_VALUE, .values = dir_values, .max_values = MAX_DIRS},
        {.name = "force", .kind = CLI_OPT_FLAG},
    };
    struct cli_args args = {0};
    struct engines eng = {0};
    struct scan sc = {0};
    struct gpu_inventory inv = {0};
    struct gpu *gpu = NULL;
    char *gpu_err = NULL;
    char *dirs[MAX_DIRS];
    int n_dirs = 0;
    struct buf text;
    buf_init(&text, 64 << 20);
    int rc = cli_setup(argc, argv, app, opts, 2, usage, &args);
    if (rc < 0)
        return cli_exit_status(rc);
    const char *path = app->config_path;
    int to_stdout = strcmp(path, "-") == 0;
    int force = opts[1].seen > 0;

    /* --dir PATH and a bare PATH are the same; each is made absolute, for the cmds. */
    const char *given[MAX_DIRS];
    int n_given = 0;
    if (opts[0].seen + args.n > MAX_DIRS) {
        rc = cli_usage_error("init", "at most %d directories may be given", MAX_DIRS);
        goto out;
    }
    for (int i = 0; i < opts[0].seen; i++)
        given[n_given++] = dir_values[i];
    for (int i = 0; i < args.n; i++)
        given[n_given++] = args.pos[i];
    for (int i = 0; i < n_given; i++) {
        char *abs = realpath(given[i], NULL);
        struct stat st;
        if (!abs || stat(abs, &st) < 0 || !S_ISDIR(st.st_mode)) {
            char *g = printable(given[i]);
            rc = cli_usage_error("init", "cannot search '%s': %s", g,
                                 abs ? "not a directory" : strerror(errno));
            free(g);
            free(abs);
            goto out;
        }
        dirs[n_dirs++] = abs;
    }
    struct stat st;
    if (!to_stdout && !force && lstat(path, &st) == 0) {
        rc = cli_fail("'%s' exists; pass --force to overwrite it, or -c FILE to write another",
                      path);
        goto out;
    }

    gpu = gpu_new(NULL, 0, NULL, NULL);
    if (gpu_read(gpu, &inv, &gpu_err) < 0)
        gpu_inventory_release(&inv);
    eng.llama_server = find_program("llama-server");
    eng.vllm = find_program("vllm");
    eng.sglang = find_program("sglang");
    for (int i = 0; i < n_dirs && !sc.stopped; i++)
        scan_dir(&sc, dirs[i], 0);

    write_header(&text, &inv, gpu_err, &eng, &sc, n_dirs);
    write_top(&text, &inv);
    write_models(&text, &sc, &eng, &inv);

    FILE *out = to_stdout ? stderr : stdout;
    report(out, &inv, gpu_err, &eng, &sc, dirs, n_dirs);
    if (to_stdout) {
        fwrite(text.data, 1, text.len, stdout);
        rc = fflush(stdout) == 0 ? 0 : cli_fail("cannot write the config: %s", strerror(errno));
        goto out;
    }
    const char *what = "";
    int wrc = cli_write_file(path, text.data, text.len, force, &what);
    if (wrc == -EEXIST) {
        rc = cli_fail("'%s' exists; pass --force to overwrite it, or -c FILE to write another",
                      path);
        goto out;
    }
    if (wrc < 0) {
        rc = cli_fail("cannot %s '%s': %s", what, path, strerror(-wrc));
        goto out;
    }
    printf("wrote %s with %zu model%s; check it with 'yard check -c %s', then run it with 'yard "
           "serve -c %s'\n",
           path, sc.n_models, sc.n_models == 1 ? "" : "s", path, path);
    rc = 0;
out:
    buf_release(&text);
    scan_release(&sc);
    gpu_inventory_release(&inv);
    gpu_free(gpu);
    free(gpu_err);
    free(eng.llama_server);
    free(eng.vllm);
    free(eng.sglang);
    for (int i = 0; i < n_dirs; i++)
        free(dirs[i]);
    cli_args_release(&args);
    return rc;
}
