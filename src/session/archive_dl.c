/*
 * libarchive's functions that backup.c calls, defined here and forwarded to
 * libarchive.so.13, loaded on the first session__archive_load (archive_dl.h
 * says why). Without the library every call fails as libarchive's own calls
 * fail (a NULL handle, ARCHIVE_FATAL), and session__archive_load says why.
 */
#include "session/archive_dl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include <archive.h>
#include <archive_entry.h>

#define LIBARCHIVE "libarchive.so.13"

/* X(name): every function forwarded. */
#define ARCHIVE_FUNCTIONS                                                                          \
    X(archive_entry_filetype)                                                                      \
    X(archive_entry_free)                                                                          \
    X(archive_entry_hardlink)                                                                      \
    X(archive_entry_new)                                                                           \
    X(archive_entry_pathname)                                                                      \
    X(archive_entry_set_hardlink)                                                                  \
    X(archive_entry_set_pathname)                                                                  \
    X(archive_entry_size)                                                                          \
    X(archive_error_string)                                                                        \
    X(archive_read_data)                                                                           \
    X(archive_read_data_block)                                                                     \
    X(archive_read_disk_descend)                                                                   \
    X(archive_read_disk_new)                                                                       \
    X(archive_read_disk_open)                                                                      \
    X(archive_read_disk_set_behavior)                                                              \
    X(archive_read_disk_set_standard_lookup)                                                       \
    X(archive_read_disk_set_symlink_physical)                                                      \
    X(archive_read_free)                                                                           \
    X(archive_read_new)                                                                            \
    X(archive_read_next_header)                                                                    \
    X(archive_read_next_header2)                                                                   \
    X(archive_read_open_filename)                                                                  \
    X(archive_read_support_filter_zstd)                                                            \
    X(archive_read_support_format_tar)                                                             \
    X(archive_write_add_filter_zstd)                                                               \
    X(archive_write_close)                                                                         \
    X(archive_write_data)                                                                          \
    X(archive_write_data_block)                                                                    \
    X(archive_write_disk_new)                                                                      \
    X(archive_write_disk_set_options)                                                              \
    X(archive_write_disk_set_standard_lookup)                                                      \
    X(archive_write_finish_entry)                                                                  \
    X(archive_write_free)                                                                          \
    X(archive_write_header)                                                                        \
    X(archive_write_new)                                                                           \
    X(archive_write_open_fd)                                                                       \
    X(archive_write_set_format_pax_restricted)

/* Each a pointer of the type archive.h declares. */
static struct {
#define X(name) __typeof__(name) *name;
    ARCHIVE_FUNCTIONS
#undef X
} fn;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int loaded;
static char why[512];

static void load(void)
{
    void *lib = dlopen(LIBARCHIVE, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(why, sizeof why,
                 "cannot load libarchive (%s); install it (Debian: apt install libarchive13)",
                 e ? e : LIBARCHIVE);
        return;
    }
#define X(name)                                                                                    \
    if (!(*(void **)&fn.name = dlsym(lib, #name))) {                                               \
        snprintf(why, sizeof why,                                                                  \
                 "the libarchive at %s has no %s; install libarchive 3.4 or later", LIBARCHIVE,    \
                 #name);                                                                           \
        dlclose(lib);                                                                              \
        return;                                                                                    \
    }
    ARCHIVE_FUNCTIONS
#undef X
    loaded = 1;
}

static int ready(void)
{
    pthread_once(&once, load);
    return loaded;
}

int session__archive_load(char *err, size_t errlen)
{
    if (ready())
        return 0;
    snprintf(err, errlen, "%s", why);
    return -ENOENT;
}

/* F(type, name, (params), (args), value without the library) */
#define F(type, name, params, args, none)                                                          \
    type(name) params                                                                              \
    {                                                                                              \
        return ready() ? fn.name args : none;                                                      \
    }
/* V: the same for a function returning nothing. */
#define V(name, params, args)                                                                      \
    void(name) params                                                                              \
    {                                                                                              \
        if (ready())                                                                               \
            fn.name args;                                                                          \
    }

F(__LA_MODE_T, archive_entry_filetype, (struct archive_entry * e), (e), 0)
V(archive_entry_free, (struct archive_entry * e), (e))
F(const char *, archive_entry_hardlink, (struct archive_entry * e), (e), NULL)
F(struct archive_entry *, archive_entry_new, (void), (), NULL)
F(const char *, archive_entry_pathname, (struct archive_entry * e), (e), NULL)
V(archive_entry_set_hardlink, (struct archive_entry * e, const char *s), (e, s))
V(archive_entry_set_pathname, (struct archive_entry * e, const char *s), (e, s))
F(la_int64_t, archive_entry_size, (struct archive_entry * e), (e), 0)
F(const char *, archive_error_string, (struct archive * a), (a), why)
F(la_ssize_t, archive_read_data, (struct archive * a, void *b, size_t n), (a, b, n), ARCHIVE_FATAL)
F(int, archive_read_data_block, (struct archive * a, const void **b, size_t *n, la_int64_t *off),
  (a, b, n, off), ARCHIVE_FATAL)
F(int, archive_read_disk_descend, (struct archive * a), (a), ARCHIVE_FATAL)
F(struct archive *, archive_read_disk_new, (void), (), NULL)
F(int, archive_read_disk_open, (struct archive * a, const char *p), (a, p), ARCHIVE_FATAL)
F(int, archive_read_disk_set_behavior, (struct archive * a, int f), (a, f), ARCHIVE_FATAL)
F(int, archive_read_disk_set_standard_lookup, (struct archive * a), (a), ARCHIVE_FATAL)
F(int, archive_read_disk_set_symlink_physical, (struct archive * a), (a), ARCHIVE_FATAL)
F(int, archive_read_free, (struct archive * a), (a), ARCHIVE_FATAL)
F(struct archive *, archive_read_new, (void), (), NULL)
F(int, archive_read_next_header, (struct archive * a, struct archive_entry **e), (a, e),
  ARCHIVE_FATAL)
F(int, archive_read_next_header2, (struct archive * a, struct archive_entry *e), (a, e),
  ARCHIVE_FATAL)
F(int, archive_read_open_filename, (struct archive * a, const char *p, size_t n), (a, p, n),
  ARCHIVE_FATAL)
F(int, archive_read_support_filter_zstd, (struct archive * a), (a), ARCHIVE_FATAL)
F(int, archive_read_support_format_tar, (struct archive * a), (a), ARCHIVE_FATAL)
F(int, archive_write_add_filter_zstd, (struct archive * a), (a), ARCHIVE_FATAL)
F(int, archive_write_close, (struct archive * a), (a), ARCHIVE_FATAL)
F(la_ssize_t, archive_write_data, (struct archive * a, const void *b, size_t n), (a, b, n),
  ARCHIVE_FATAL)
F(la_ssize_t, archive_write_data_block,
  (struct archive * a, const void *b, size_t n, la_int64_t off), (a, b, n, off), ARCHIVE_FATAL)
F(struct archive *, archive_write_disk_new, (void), (), NULL)
F(int, archive_write_disk_set_options, (struct archive * a, int f), (a, f), ARCHIVE_FATAL)
F(int, archive_write_disk_set_standard_lookup, (struct archive * a), (a), ARCHIVE_FATAL)
F(int, archive_write_finish_entry, (struct archive * a), (a), ARCHIVE_FATAL)
F(int, archive_write_free, (struct archive * a), (a), ARCHIVE_FATAL)
F(int, archive_write_header, (struct archive * a, struct archive_entry *e), (a, e), ARCHIVE_FATAL)
F(struct archive *, archive_write_new, (void), (), NULL)
F(int, archive_write_open_fd, (struct archive * a, int fd), (a, fd), ARCHIVE_FATAL)
F(int, archive_write_set_format_pax_restricted, (struct archive * a), (a), ARCHIVE_FATAL)
