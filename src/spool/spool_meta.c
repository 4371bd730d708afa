/* Message metadata: the "key=value" lines stored with each envelope. */
#include "spool/spool.h"

#include <jansson.h>
#include <stddef.h>
#include <string.h>

/* ---- metadata ---- */

/* Calls fn for each "key=value" line; stops when fn returns non-zero. */
static int meta_each(const char *meta,
                     int (*fn)(void *arg, const char *k, size_t kl, const char *v, size_t vl),
                     void *arg)
{
    const char *p = meta;
    while (p && *p) {
        size_t n = strcspn(p, "\n");
        const char *eq = memchr(p, '=', n);
        if (eq && fn(arg, p, (size_t)(eq - p), eq + 1, n - (size_t)(eq - p) - 1))
            return 1;
        p += n + (p[n] ? 1 : 0);
    }
    return 0;
}

struct meta_find {
    const char *key;
    char *out;
    size_t outlen;
};

static int meta_find_one(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    struct meta_find *f = arg;
    if (strlen(f->key) != kl || memcmp(f->key, k, kl) != 0)
        return 0;
    if (vl >= f->outlen)
        vl = f->outlen - 1;
    memcpy(f->out, v, vl);
    f->out[vl] = 0;
    return 1;
}

int spool_meta_get(const char *meta, const char *key, char *out, size_t outlen)
{
    struct meta_find f = {key, out, outlen};
    if (outlen)
        out[0] = 0;
    return outlen && meta_each(meta, meta_find_one, &f) ? 0 : -1;
}

static int meta_json_one(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    char key[64];
    if (kl >= sizeof key)
        return 0;
    memcpy(key, k, kl);
    key[kl] = 0;
    json_object_set_new(arg, key, json_stringn(v, vl));
    return 0;
}

struct json_t *spool_meta_json(const char *meta)
{
    json_t *o = json_object();
    meta_each(meta, meta_json_one, o);
    return o;
}
