/* router_scan_true: is a top-level member of the body true? */
#include <string.h>

#include <jansson.h>

#include "router/scan.h"

int router_scan_true(const char *body, size_t len, const char *key)
{
    /* Most bodies never mention the key: the full parse runs only when one might. */
    size_t klen = strlen(key);
    int seen = 0;
    for (const char *p = body; !seen && (p = memchr(p, '"', (size_t)(body + len - p)));) {
        p++;
        if ((size_t)(body + len - p) > klen && memcmp(p, key, klen) == 0 && p[klen] == '"')
            seen = 1;
    }
    if (!seen)
        return 0;
    json_error_t err;
    json_t *o = json_loadb(body, len, 0, &err);
    int yes = json_is_object(o) && json_is_true(json_object_get(o, key));
    json_decref(o);
    return yes;
}
