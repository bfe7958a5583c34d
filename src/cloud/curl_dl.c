/*
 * libcurl's functions that yard calls, defined here and forwarded to
 * libcurl.so.4, loaded on the first call (curl_dl.h says why). Each
 * option of curl_easy_setopt and curl_multi_setopt takes one argument whose
 * type its number says (curl.h's CURLOPTTYPE_ ranges): it is read as that
 * type and passed on as it came. curl_easy_getinfo's argument is always a
 * pointer. Without the library every call fails as libcurl's own calls fail
 * (a NULL handle, an error code), and cloud_curl_load says why.
 */
#define CURL_DISABLE_TYPECHECK 1
#include "cloud/curl_dl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>

#include <curl/curl.h>

#include "base/alloc.h"

#define LIBCURL "libcurl.so.4"

static struct {
    CURLcode (*global_init)(long);
    void (*global_cleanup)(void);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
    CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
    CURLcode (*easy_perform)(CURL *);
    void (*easy_cleanup)(CURL *);
    const char *(*easy_strerror)(CURLcode);
    struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
    void (*slist_free_all)(struct curl_slist *);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_setopt)(CURLM *, CURLMoption, ...);
    CURLMcode (*multi_add_handle)(CURLM *, CURL *);
    CURLMcode (*multi_remove_handle)(CURLM *, CURL *);
    CURLMcode (*multi_socket_action)(CURLM *, curl_socket_t, int, int *);
    CURLMcode (*multi_assign)(CURLM *, curl_socket_t, void *);
    CURLMsg *(*multi_info_read)(CURLM *, int *);
    CURLMcode (*multi_cleanup)(CURLM *);
    const char *(*multi_strerror)(CURLMcode);
} fn;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int loaded;
static char why[512];

static void load(void)
{
    void *lib = dlopen(LIBCURL, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(why, sizeof why,
                 "cannot load libcurl (%s); install it (Debian: apt install libcurl4)",
                 e ? e : LIBCURL);
        return;
    }
    struct {
        const char *name;
        void **slot;
    } table[] = {
#define F(member, name) {name, (void **)&fn.member}
        F(global_init, "curl_global_init"),
        F(global_cleanup, "curl_global_cleanup"),
        F(easy_init, "curl_easy_init"),
        F(easy_setopt, "curl_easy_setopt"),
        F(easy_getinfo, "curl_easy_getinfo"),
        F(easy_perform, "curl_easy_perform"),
        F(easy_cleanup, "curl_easy_cleanup"),
        F(easy_strerror, "curl_easy_strerror"),
        F(slist_append, "curl_slist_append"),
        F(slist_free_all, "curl_slist_free_all"),
        F(multi_init, "curl_multi_init"),
        F(multi_setopt, "curl_multi_setopt"),
        F(multi_add_handle, "curl_multi_add_handle"),
        F(multi_remove_handle, "curl_multi_remove_handle"),
        F(multi_socket_action, "curl_multi_socket_action"),
        F(multi_assign, "curl_multi_assign"),
        F(multi_info_read, "curl_multi_info_read"),
        F(multi_cleanup, "curl_multi_cleanup"),
        F(multi_strerror, "curl_multi_strerror"),
#undef F
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        *table[i].slot = dlsym(lib, table[i].name);
        if (!*table[i].slot) {
            snprintf(why, sizeof why, "the libcurl at %s has no %s; install libcurl 7.80 or later",
                     LIBCURL, table[i].name);
            dlclose(lib);
            return;
        }
    }
    loaded = 1;
}

static int ready(void)
{
    pthread_once(&once, load);
    return loaded;
}

int cloud_curl_load(char **err)
{
    if (ready())
        return 0;
    if (err)
        *err = xstrdup(why);
    return -ENOENT;
}

/* The one argument of option number opt, as its range says, passed on to call. */
#define FORWARD_OPTION(call, opt, ap)                                                              \
    ((opt) < CURLOPTTYPE_OBJECTPOINT     ? call(va_arg(ap, long))                                  \
     : (opt) < CURLOPTTYPE_FUNCTIONPOINT ? call(va_arg(ap, void *))                                \
     : (opt) < CURLOPTTYPE_OFF_T         ? call(va_arg(ap, void (*)(void)))                        \
     : (opt) < CURLOPTTYPE_BLOB          ? call(va_arg(ap, curl_off_t))                            \
                                         : call(va_arg(ap, void *)))

CURLcode(curl_global_init)(long flags)
{
    return ready() ? fn.global_init(flags) : CURLE_FAILED_INIT;
}

void(curl_global_cleanup)(void)
{
    if (ready())
        fn.global_cleanup();
}

CURL *(curl_easy_init)(void)
{
    return ready() ? fn.easy_init() : NULL;
}

CURLcode(curl_easy_setopt)(CURL *h, CURLoption opt, ...)
{
    if (!ready())
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, opt);
#define CALL(v) fn.easy_setopt(h, opt, v)
    CURLcode rc = FORWARD_OPTION(CALL, opt, ap);
#undef CALL
    va_end(ap);
    return rc;
}

CURLcode(curl_easy_getinfo)(CURL *h, CURLINFO info, ...)
{
    if (!ready())
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, info);
    void *out = va_arg(ap, void *);
    va_end(ap);
    return fn.easy_getinfo(h, info, out);
}

CURLcode(curl_easy_perform)(CURL *h)
{
    return ready() ? fn.easy_perform(h) : CURLE_FAILED_INIT;
}

void(curl_easy_cleanup)(CURL *h)
{
    if (ready())
        fn.easy_cleanup(h);
}

const char *(curl_easy_strerror)(CURLcode c)
{
    return ready() ? fn.easy_strerror(c) : why;
}

struct curl_slist *(curl_slist_append)(struct curl_slist *l, const char *s)
{
    return ready() ? fn.slist_append(l, s) : NULL;
}

void(curl_slist_free_all)(struct curl_slist *l)
{
    if (ready())
        fn.slist_free_all(l);
}

CURLM *(curl_multi_init)(void)
{
    return ready() ? fn.multi_init() : NULL;
}

CURLMcode(curl_multi_setopt)(CURLM *m, CURLMoption opt, ...)
{
    if (!ready())
        return CURLM_INTERNAL_ERROR;
    va_list ap;
    va_start(ap, opt);
#define CALL(v) fn.multi_setopt(m, opt, v)
    CURLMcode rc = FORWARD_OPTION(CALL, opt, ap);
#undef CALL
    va_end(ap);
    return rc;
}

CURLMcode(curl_multi_add_handle)(CURLM *m, CURL *h)
{
    return ready() ? fn.multi_add_handle(m, h) : CURLM_INTERNAL_ERROR;
}

CURLMcode(curl_multi_remove_handle)(CURLM *m, CURL *h)
{
    return ready() ? fn.multi_remove_handle(m, h) : CURLM_INTERNAL_ERROR;
}

CURLMcode(curl_multi_socket_action)(CURLM *m, curl_socket_t s, int ev, int *running)
{
    return ready() ? fn.multi_socket_action(m, s, ev, running) : CURLM_INTERNAL_ERROR;
}

CURLMcode(curl_multi_assign)(CURLM *m, curl_socket_t s, void *p)
{
    return ready() ? fn.multi_assign(m, s, p) : CURLM_INTERNAL_ERROR;
}

CURLMsg *(curl_multi_info_read)(CURLM *m, int *left)
{
    return ready() ? fn.multi_info_read(m, left) : NULL;
}

CURLMcode(curl_multi_cleanup)(CURLM *m)
{
    return ready() ? fn.multi_cleanup(m) : CURLM_INTERNAL_ERROR;
}

const char *(curl_multi_strerror)(CURLMcode c)
{
    return ready() ? fn.multi_strerror(c) : why;
}
