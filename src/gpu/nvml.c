/*
 * The NVML source: libnvidia-ml loaded with dlopen, so that yard builds and
 * runs without CUDA headers or the driver. The few types used are declared
 * here by hand from NVML's ABI; versioned symbols are preferred, falling back
 * to older names as nvtop does.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "gpu/gpu.h"

/* nvmlReturn_t values used here. */
#define NVML_SUCCESS 0
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7

/* NVML_DEVICE_NAME_V2_BUFFER_SIZE and NVML_DEVICE_UUID_V2_BUFFER_SIZE. */
#define NVML_BUF 96

/* nvmlMemory_t (v1): bytes. */
struct nvml_memory {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
};

/* nvmlProcessInfo_v1_t, taken by the unversioned nvmlDeviceGetComputeRunningProcesses. */
struct nvml_process_v1 {
    unsigned int pid;
    unsigned long long used_gpu_memory;
};

/* nvmlProcessInfo_v2_t (24 bytes), taken by the _v2 and _v3 functions. */
struct nvml_process_v2 {
    unsigned int pid;
    unsigned long long used_gpu_memory; /* all bits set: not available */
    unsigned int gpu_instance_id;
    unsigned int compute_instance_id;
};

struct gpu__nvml {
    void *lib;
    int (*init)(void);
    int (*shutdown)(void);
    const char *(*error_string)(int);
    int (*get_count)(unsigned int *);
    int (*get_handle)(unsigned int, void **);
    int (*get_memory)(void *, struct nvml_memory *);
    int (*get_name)(void *, char *, unsigned int);
    int (*get_uuid)(void *, char *, unsigned int);
    int (*get_procs)(void *, unsigned int *, void *);
    int procs_v1; /* get_procs is the unversioned one */
};

/* The first of names the library has; NULL when none. */
static void *sym(void *lib, const char *const *names)
{
    for (; *names; names++) {
        void *p = dlsym(lib, *names);
        if (p)
            return p;
    }
    return NULL;
}

static const char *nvml_str(struct gpu__nvml *n, int r)
{
    const char *s = n->error_string ? n->error_string(r) : NULL;
    return s ? s : "unknown NVML error";
}

/*
 * A function pointer from a data pointer: dlsym's answer is one by POSIX,
 * but ISO C cannot say so, hence the copy.
 */
#define LOAD(field, ...)                                                                           \
    do {                                                                                           \
        static const char *const names_[] = {__VA_ARGS__, NULL};                                   \
        void *p_ = sym(n->lib, names_);                                                            \
        memcpy(&n->field, &p_, sizeof(p_));                                                        \
    } while (0)

int gpu__nvml_open(const char *lib, struct gpu__nvml **out, char **err)
{
    *out = NULL;
    void *h = NULL;
    if (lib) {
        h = dlopen(lib, RTLD_LAZY | RTLD_LOCAL);
    } else {
        h = dlopen("libnvidia-ml.so.1", RTLD_LAZY | RTLD_LOCAL);
        if (!h)
            h = dlopen("libnvidia-ml.so", RTLD_LAZY | RTLD_LOCAL);
    }
    if (!h)
        return -ENOENT;

    struct gpu__nvml *n = xcalloc(1, sizeof(*n));
    n->lib = h;
    LOAD(init, "nvmlInit_v2", "nvmlInit");
    LOAD(shutdown, "nvmlShutdown");
    LOAD(error_string, "nvmlErrorString");
    LOAD(get_count, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
    LOAD(get_handle, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
    LOAD(get_memory, "nvmlDeviceGetMemoryInfo");
    LOAD(get_name, "nvmlDeviceGetName");
    LOAD(get_uuid, "nvmlDeviceGetUUID");
    LOAD(get_procs, "nvmlDeviceGetComputeRunningProcesses_v3",
         "nvmlDeviceGetComputeRunningProcesses_v2");
    if (!n->get_procs) {
        LOAD(get_procs, "nvmlDeviceGetComputeRunningProcesses");
        n->procs_v1 = n->get_procs != NULL;
    }

    const char *missing = !n->init         ? "nvmlInit"
                          : !n->shutdown   ? "nvmlShutdown"
                          : !n->get_count  ? "nvmlDeviceGetCount"
                          : !n->get_handle ? "nvmlDeviceGetHandleByIndex"
                          : !n->get_memory ? "nvmlDeviceGetMemoryInfo"
                          : !n->get_name   ? "nvmlDeviceGetName"
                                           : NULL;
    if (missing) {
        *err = xstrfmt("the NVML library '%s' has no '%s'; is the NVIDIA driver too old?",
                       lib ? lib : "libnvidia-ml.so.1", missing);
        dlclose(h);
        free(n);
        return -ENOSYS;
    }
    int r = n->init();
    if (r != NVML_SUCCESS) {
        *err = xstrfmt("cannot initialise NVML: %s", nvml_str(n, r));
        dlclose(h);
        free(n);
        return -EIO;
    }
    *out = n;
    return 0;
}

void gpu__nvml_close(struct gpu__nvml *n)
{
    if (!n)
        return;
    n->shutdown();
    dlclose(n->lib);
    free(n);
}

/* The compute processes of one device, with the INSUFFICIENT_SIZE retry. */
static int read_procs(struct gpu__nvml *n, void *dev, struct gpu_dev *d, char **err)
{
    if (!n->get_procs)
        return 0;
    size_t elem = n->procs_v1 ? sizeof(struct nvml_process_v1) : sizeof(struct nvml_process_v2);
    unsigned int cap = 16, count = 0;
    void *buf = NULL;
    int r = NVML_ERROR_INSUFFICIENT_SIZE;
    /* Processes come and go between the calls: a few tries, each with room to spare. */
    for (int tries = 0; tries < 5 && r == NVML_ERROR_INSUFFICIENT_SIZE; tries++) {
        buf = xrealloc(buf, cap * elem);
        memset(buf, 0, cap * elem);
        count = cap;
        r = n->get_procs(dev, &count, buf);
        if (r == NVML_ERROR_INSUFFICIENT_SIZE)
            cap = (count > cap ? count : cap) + 16;
    }
    if (r == NVML_ERROR_NOT_SUPPORTED) {
        free(buf);
        return 0;
    }
    if (r != NVML_SUCCESS) {
        *err = xstrfmt("NVML cannot list the processes of GPU %d: %s", d->index, nvml_str(n, r));
        free(buf);
        return -EIO;
    }
    if (count > cap)
        count = cap;
    for (unsigned int i = 0; i < count; i++) {
        unsigned int pid;
        unsigned long long used;
        if (n->procs_v1) {
            const struct nvml_process_v1 *p = (const struct nvml_process_v1 *)buf + i;
            pid = p->pid;
            used = p->used_gpu_memory;
        } else {
            const struct nvml_process_v2 *p = (const struct nvml_process_v2 *)buf + i;
            pid = p->pid;
            used = p->used_gpu_memory;
        }
        char name[64];
        gpu__proc_name((int)pid, name, sizeof(name));
        gpu__dev_add_proc(d, (int)pid, used == ~0ull ? UINT64_MAX : (uint64_t)used, name);
    }
    free(buf);
    return 0;
}

int gpu__nvml_read(struct gpu__nvml *n, struct gpu_inventory *out, char **err)
{
    unsigned int count = 0;
    int r = n->get_count(&count);
    if (r != NVML_SUCCESS) {
        *err = xstrfmt("NVML cannot count the GPUs: %s", nvml_str(n, r));
        return -EIO;
    }
    if (count > 1024)
        count = 1024;
    out->devs = count ? xcalloc(count, sizeof(*out->devs)) : NULL;
    for (unsigned int i = 0; i < count; i++) {
        struct gpu_dev *d = &out->devs[out->n++];
        void *dev = NULL;
        d->index = (int)i;
        r = n->get_handle(i, &dev);
        if (r != NVML_SUCCESS) {
            *err = xstrfmt("NVML cannot open GPU %u: %s", i, nvml_str(n, r));
            return -EIO;
        }
        char buf[NVML_BUF];
        buf[0] = '\0';
        if (n->get_name(dev, buf, sizeof(buf)) == NVML_SUCCESS) {
            buf[sizeof(buf) - 1] = '\0';
            snprintf(d->name, sizeof(d->name), "%s", buf);
        }
        buf[0] = '\0';
        if (n->get_uuid && n->get_uuid(dev, buf, sizeof(buf)) == NVML_SUCCESS) {
            buf[sizeof(buf) - 1] = '\0';
            snprintf(d->uuid, sizeof(d->uuid), "%s", buf);
        }
        struct nvml_memory mem = {0};
        r = n->get_memory(dev, &mem);
        if (r == NVML_SUCCESS) {
            d->total = mem.total;
            d->used = mem.used;
            d->free = mem.free;
        } else if (r == NVML_ERROR_NOT_SUPPORTED) {
            /* Unified memory (GB10): as nvidia-smi's [N/A]. */
            d->total = 0;
            d->used = UINT64_MAX;
            d->free = 0;
        } else {
            *err = xstrfmt("NVML cannot read the memory of GPU %u: %s", i, nvml_str(n, r));
            return -EIO;
        }
        if (read_procs(n, dev, d, err) < 0)
            return -EIO;
    }
    return 0;
}
