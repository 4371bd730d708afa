/* Rate limits checked by the session before MAIL FROM (per credential, per
 * source address) and around AUTH (failed attempts per address). Both keep a
 * small record per key in one bounded table: a hash for O(1) lookup, an LRU
 * list so that idle keys are dropped as new ones arrive and memory never
 * grows past the configured number of keys. */
#include "policy/ratelimit.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS_PER_S 1000ull
#define MS_PER_MIN (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_MIN)
#define MS_PER_DAY (24 * MS_PER_H)
#define NS_PER_MS 1000000ull
/* Bounds that keep nanosecond arithmetic far from overflow. */
#define RATE_COUNT_MAX 1000000000ull
#define RATE_PERIOD_MAX (366 * MS_PER_DAY)

/* ---- keyed table ---- */

struct rl_entry {
    struct rl_entry *hnext;
    struct rl_entry *newer, *older;
    uint64_t v[3]; /* owner's state */
    uint64_t hash;
    size_t klen;
    char key[];
};

typedef bool (*rl_idle_fn)(const struct rl_entry *e, uint64_t now_ms, const void *ctx);

struct rl_table {
    struct rl_entry **buckets;
    size_t mask;
    size_t count, max;
    struct rl_entry *newest, *oldest;
    uint64_t k0, k1;
    uint64_t evictions;
    rl_idle_fn idle;
    const void *ctx;
};

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

/* SipHash-2-4: keys come from clients (addresses, names), so the bucket
 * must not be predictable without the seed. */
static uint64_t rl_siphash(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    uint64_t m, b = (uint64_t)len << 56;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        m = 0;
        for (int j = 7; j >= 0; j--)
            m = m << 8 | in[i + (size_t)j];
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)in[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static int rl_table_init(struct rl_table *t, size_t max, const unsigned char seed[16],
                         rl_idle_fn idle, const void *ctx)
{
    size_t n = 16;
    memset(t, 0, sizeof(*t));
    if (max == 0 || max > (SIZE_MAX >> 4))
        return -1;
    while (n < max)
        n <<= 1;
    t->buckets = calloc(n, sizeof(*t->buckets));
    if (t->buckets == NULL)
        return -1;
    t->mask = n - 1;
    t->max = max;
    t->idle = idle;
    t->ctx = ctx;
    if (seed != NULL) {
        for (int i = 0; i < 8; i++) {
            t->k0 = t->k0 << 8 | seed[i];
            t->k1 = t->k1 << 8 | seed[8 + i];
        }
    }
    return 0;
}

static void rl_unlink_lru(struct rl_table *t, struct rl_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        t->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void rl_push_newest(struct rl_table *t, struct rl_entry *e)
{
    e->older = t->newest;
    e->newer = NULL;
    if (t->newest)
        t->newest->newer = e;
    t->newest = e;
    if (t->oldest == NULL)
        t->oldest = e;
}

static void rl_remove(struct rl_table *t, struct rl_entry *e)
{
    struct rl_entry **pp = &t->buckets[e->hash & t->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    rl_unlink_lru(t, e);
    t->count--;
    free(e);
}

static void rl_table_clear(struct rl_table *t)
{
    while (t->oldest)
        rl_remove(t, t->oldest);
    free(t->buckets);
    t->buckets = NULL;
}

/* Drops up to two idle keys from the old end: keeps the table lean without a
 * timer, at constant cost per call. */
static void rl_trim(struct rl_table *t, uint64_t now_ms)
{
    for (int i = 0; i < 2 && t->oldest && t->idle(t->oldest, now_ms, t->ctx); i++)
        rl_remove(t, t->oldest);
}

static struct rl_entry *rl_find(struct rl_table *t, const char *key, size_t klen, uint64_t h)
{
    for (struct rl_entry *e = t->buckets[h & t->mask]; e; e = e->hnext)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

/* Finds key (moving it to the new end) or, when create, adds it with zero
 * state, dropping the least recently used key if the table is full. */
static struct rl_entry *rl_get(struct rl_table *t, const char *key, uint64_t now_ms, bool create)
{
    size_t klen = strlen(key);
    uint64_t h = rl_siphash(t->k0, t->k1, (const unsigned char *)key, klen);

    rl_trim(t, now_ms);
    struct rl_entry *e = rl_find(t, key, klen, h);
    if (e != NULL) {
        rl_unlink_lru(t, e);
        rl_push_newest(t, e);
        return e;
    }
    if (!create)
        return NULL;
    if (t->count >= t->max) {
        /* The least recently seen key goes; if it still had state that
         * mattered, count it so operators can raise the cap. */
        if (!t->idle(t->oldest, now_ms, t->ctx))
            t->evictions++;
        rl_remove(t, t->oldest);
    }
    e = calloc(1, sizeof(*e) + klen + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->key, key, klen + 1);
    e->klen = klen;
    e->hash = h;
    e->hnext = t->buckets[h & t->mask];
    t->buckets[h & t->mask] = e;
    rl_push_newest(t, e);
    t->count++;
    return e;
}

static void rl_expire_all(struct rl_table *t, uint64_t now_ms)
{
    struct rl_entry *e = t->oldest;
    while (e) {
        struct rl_entry *next = e->newer;
        if (t->idle(e, now_ms, t->ctx))
            rl_remove(t, e);
        e = next;
    }
}

static bool rl_key_ok(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    return n > 0 && n <= RATELIMIT_KEY_MAX;
}

/* Copies key for a reply, printable ASCII only, so a name cannot break the
 * SMTP line or forge a second one. */
static void rl_safe_key(const char *key, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = key; *p && o + 1 < size; p++)
        out[o++] = (*p >= 0x20 && *p < 0x7f && *p != '\'') ? *p : '?';
    out[o] = '\0';
}

/* ---- rate spec ---- */

static bool rl_word_eq(const char *w, size_t n, const char *const *names)
{
    for (; *names; names++)
        if (strlen(*names) == n && strncasecmp(w, *names, n) == 0)
            return true;
    return false;
}

int rate_spec_parse(const char *s, size_t len, struct rate_spec *out)
{
    static const char *const sec[] = {"s", "sec", "secs", "second", "seconds", NULL};
    static const char *const min[] = {"m", "min", "mins", "minute", "minutes", NULL};
    static const char *const hour[] = {"h", "hr", "hrs", "hour", "hours", NULL};
    static const char *const day[] = {"d", "day", "days", NULL};
    static const char *const msec[] = {"ms", NULL};
    const char *p = s, *end = s + len;
    uint64_t count = 0, mult = 0;

    while (p < end && isspace((unsigned char)*p))
        p++;
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    const char *d = p;
    while (p < end && isdigit((unsigned char)*p) && count <= RATE_COUNT_MAX)
        count = count * 10 + (uint64_t)(*p++ - '0');
    if (p == d || count == 0 || count > RATE_COUNT_MAX)
        return -1;
    while (p < end && *p == ' ')
        p++;
    if (p == end || *p++ != '/')
        return -1;
    while (p < end && *p == ' ')
        p++;
    d = p;
    while (p < end && isdigit((unsigned char)*p) && mult <= RATE_PERIOD_MAX)
        mult = mult * 10 + (uint64_t)(*p++ - '0');
    if (p == d)
        mult = 1;
    if (mult == 0)
        return -1;
    while (p < end && *p == ' ')
        p++;
    size_t n = (size_t)(end - p);
    uint64_t unit;
    if (rl_word_eq(p, n, sec))
        unit = MS_PER_S;
    else if (rl_word_eq(p, n, min))
        unit = MS_PER_MIN;
    else if (rl_word_eq(p, n, hour))
        unit = MS_PER_H;
    else if (rl_word_eq(p, n, day))
        unit = MS_PER_DAY;
    else if (rl_word_eq(p, n, msec))
        unit = 1;
    else
        return -1;
    if (mult > RATE_PERIOD_MAX / unit)
        return -1;
    out->count = count;
    out->period_ms = mult * unit;
    return 0;
}

int rate_spec_format(const struct rate_spec *spec, char *out, size_t out_size)
{
    static const struct {
        uint64_t ms;
        const char *name;
    } units[] = {
        {MS_PER_DAY, "day"}, {MS_PER_H, "h"}, {MS_PER_MIN, "min"}, {MS_PER_S, "s"}, {1, "ms"}};
    int n = -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (spec->period_ms % units[i].ms != 0)
            continue;
        uint64_t mult = spec->period_ms / units[i].ms;
        if (mult == 1)
            n = snprintf(out, out_size, "%llu/%s", (unsigned long long)spec->count, units[i].name);
        else
            n = snprintf(out, out_size, "%llu/%llu%s", (unsigned long long)spec->count,
                         (unsigned long long)mult, units[i].name);
        break;
    }
    return (n < 0 || (size_t)n >= out_size) ? -1 : n;
}

/* ---- GCRA limiter ---- */

/* v[0] of an entry is the theoretical arrival time (TAT) in nanoseconds: the
 * moment the bucket would be full again. A key whose TAT has passed is in the
 * same state as a key never seen, so it can be forgotten at no cost. */
static bool rl_limiter_idle(const struct rl_entry *e, uint64_t now_ms, const void *ctx)
{
    (void)ctx;
    return e->v[0] <= now_ms * NS_PER_MS;
}

struct ratelimit {
    struct rl_table t;
};

struct ratelimit *ratelimit_new(size_t max_entries, const unsigned char seed[16])
{
    struct ratelimit *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return NULL;
    if (rl_table_init(&rl->t, max_entries, seed, rl_limiter_idle, NULL) < 0) {
        free(rl);
        return NULL;
    }
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    if (rl == NULL)
        return;
    rl_table_clear(&rl->t);
    free(rl);
}

int ratelimit_take(struct ratelimit *rl, const char *key, const struct rate_spec *spec,
                   uint64_t cost, uint64_t now_ms, struct rate_verdict *out)
{
    memset(out, 0, sizeof(*out));
    if (!rl_key_ok(key) || spec == NULL || spec->count == 0 || spec->count > RATE_COUNT_MAX ||
        spec->period_ms == 0 || spec->period_ms > RATE_PERIOD_MAX || cost == 0 ||
        cost > spec->count)
        return -1;
    /* Emission interval T and burst: `count` requests may come at once, then
     * one every T. */
    uint64_t T = spec->period_ms * NS_PER_MS / spec->count;
    if (T == 0)
        T = 1;
    uint64_t burst = T * spec->count;
    uint64_t now = now_ms * NS_PER_MS;

    struct rl_entry *e = rl_get(&rl->t, key, now_ms, true);
    if (e == NULL)
        return -1;
    uint64_t tat = e->v[0] > now ? e->v[0] : now;
    uint64_t new_tat = tat + cost * T;
    /* Conforming while the bucket, after taking cost, is not overdrawn:
     * new_tat may run at most one burst ahead of now. */
    if (new_tat > now + burst) {
        uint64_t wait_ns = new_tat - burst - now;
        out->allowed = false;
        out->retry_after_ms = (wait_ns + NS_PER_MS - 1) / NS_PER_MS;
        out->retry_after_s = (uint32_t)((out->retry_after_ms + MS_PER_S - 1) / MS_PER_S);
        return 0;
    }
    e->v[0] = new_tat;
    out->allowed = true;
    out->remaining = (now + burst - new_tat) / T;
    return 0;
}

void ratelimit_expire(struct ratelimit *rl, uint64_t now_ms)
{
    rl_expire_all(&rl->t, now_ms);
}

size_t ratelimit_count(const struct ratelimit *rl)
{
    return rl->t.count;
}

uint64_t ratelimit_evictions(const struct ratelimit *rl)
{
    return rl->t.evictions;
}

int ratelimit_reply(const struct rate_spec *spec, const struct rate_verdict *v, const char *what,
                    const char *key, char *out, size_t out_size)
{
    char rate[48], safe[RATELIMIT_KEY_MAX + 1];
    if (rate_spec_format(spec, rate, sizeof(rate)) < 0)
        return -1;
    rl_safe_key(key ? key : "", safe, sizeof(safe));
    /* RFC 3463 section 3.8: X.7.1 delivery not authorized; 4xx as it passes. */
    int n = snprintf(out, out_size,
                     "450 4.7.1 Rate limit of %s for %s '%s' exceeded; try again in %u s", rate,
                     what ? what : "sender", safe, (unsigned)v->retry_after_s);
    return (n < 0 || (size_t)n >= out_size) ? -1 : n;
}

/* ---- failed authentications ---- */

/* Entry state: v[0] failures counted, v[1] time of the last failure,
 * v[2] end of the current block (0: none). */
enum { AF_FAILURES = 0, AF_LAST = 1, AF_BLOCKED_UNTIL = 2 };

struct authfail {
    struct rl_table t;
    struct authfail_config cfg;
};

static bool rl_authfail_idle(const struct rl_entry *e, uint64_t now_ms, const void *ctx)
{
    const struct authfail_config *cfg = ctx;
    return e->v[AF_BLOCKED_UNTIL] <= now_ms && e->v[AF_LAST] + cfg->forget_ms <= now_ms;
}

struct authfail *authfail_new(const struct authfail_config *cfg, const unsigned char seed[16])
{
    if (cfg == NULL || cfg->block_after == 0 || cfg->slow_after >= cfg->block_after ||
        cfg->forget_ms == 0 || cfg->max_entries == 0 || cfg->delay_max_ms < cfg->delay_ms)
        return NULL;
    struct authfail *af = calloc(1, sizeof(*af));
    if (af == NULL)
        return NULL;
    af->cfg = *cfg;
    if (rl_table_init(&af->t, cfg->max_entries, seed, rl_authfail_idle, &af->cfg) < 0) {
        free(af);
        return NULL;
    }
    return af;
}

void authfail_free(struct authfail *af)
{
    if (af == NULL)
        return;
    rl_table_clear(&af->t);
    free(af);
}

/* Brings an entry up to now: failures past the forget window no longer
 * count; a block that ended leaves the address slowed down, not clean, so
 * the next failure is delayed at once. */
static void af_refresh(const struct authfail *af, struct rl_entry *e, uint64_t now_ms)
{
    if (e->v[AF_BLOCKED_UNTIL] != 0 && e->v[AF_BLOCKED_UNTIL] <= now_ms) {
        e->v[AF_BLOCKED_UNTIL] = 0;
        e->v[AF_FAILURES] = af->cfg.slow_after;
        e->v[AF_LAST] = now_ms;
    }
    if (e->v[AF_BLOCKED_UNTIL] == 0 && e->v[AF_LAST] + af->cfg.forget_ms <= now_ms)
        e->v[AF_FAILURES] = 0;
}

static void af_verdict(const struct authfail *af, const struct rl_entry *e, uint64_t now_ms,
                       struct authfail_verdict *out)
{
    memset(out, 0, sizeof(*out));
    if (e == NULL)
        return;
    out->failures = (unsigned)e->v[AF_FAILURES];
    if (e->v[AF_BLOCKED_UNTIL] > now_ms) {
        out->blocked = true;
        out->retry_after_ms = e->v[AF_BLOCKED_UNTIL] - now_ms;
        out->retry_after_s = (uint32_t)((out->retry_after_ms + 999) / 1000);
    }
    if (out->failures > af->cfg.slow_after) {
        unsigned shift = out->failures - af->cfg.slow_after - 1;
        uint64_t d = shift >= 32 ? af->cfg.delay_max_ms : (uint64_t)af->cfg.delay_ms << shift;
        out->delay_ms = (uint32_t)(d > af->cfg.delay_max_ms ? af->cfg.delay_max_ms : d);
    }
}

void authfail_check(struct authfail *af, const char *addr, uint64_t now_ms,
                    struct authfail_verdict *out)
{
    struct rl_entry *e = rl_key_ok(addr) ? rl_get(&af->t, addr, now_ms, false) : NULL;
    if (e != NULL)
        af_refresh(af, e, now_ms);
    af_verdict(af, e, now_ms, out);
    out->delay_ms = 0; /* only a failure is answered late */
}

void authfail_record(struct authfail *af, const char *addr, uint64_t now_ms,
                     struct authfail_verdict *out)
{
    struct rl_entry *e = rl_key_ok(addr) ? rl_get(&af->t, addr, now_ms, true) : NULL;
    if (e == NULL) {
        /* No memory or a bad key: slow down as much as allowed, fail safe. */
        memset(out, 0, sizeof(*out));
        out->delay_ms = af->cfg.delay_max_ms;
        return;
    }
    af_refresh(af, e, now_ms);
    if (e->v[AF_BLOCKED_UNTIL] <= now_ms) {
        e->v[AF_FAILURES]++;
        e->v[AF_LAST] = now_ms;
        if (e->v[AF_FAILURES] >= af->cfg.block_after)
            e->v[AF_BLOCKED_UNTIL] = now_ms + af->cfg.block_ms;
    }
    af_verdict(af, e, now_ms, out);
}

size_t authfail_count(const struct authfail *af)
{
    return af->t.count;
}

int authfail_reply(const struct authfail_verdict *v, const char *addr, char *out, size_t out_size)
{
    char safe[RATELIMIT_KEY_MAX + 1];
    rl_safe_key(addr ? addr : "", safe, sizeof(safe));
    /* RFC 3463 section 3.8: X.7.0 other security status; 421 closes. */
    int n = snprintf(out, out_size,
                     "421 4.7.0 Too many failed authentications from %s; try again in %u s", safe,
                     (unsigned)v->retry_after_s);
    return (n < 0 || (size_t)n >= out_size) ? -1 : n;
}
