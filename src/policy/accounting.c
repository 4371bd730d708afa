/* Accounting counters: events are summed in memory under a mutex (never a
 * disk wait on the event loop) and a background thread writes the sums to
 * the store with one upsert transaction per flush. Counts read a per
 * credential cache of accepted counts for recent days; quotas reserve in
 * the store's shared counters (accounting_quota_take). */
#include "policy/accounting.h"
#include "core/log.h"

#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Days of accepted counts kept per credential: enough for a monthly quota
 * (at most 31 days back) with the ring never aliasing inside the window. */
#define CACHE_DAYS 64
#define CACHE_WINDOW (CACHE_DAYS - 2)
#define CACHE_BUCKETS 256
#define SECONDS_PER_DAY 86400

static const char *const event_names[ACCT_EVENT_COUNT] = {"accepted", "delivered", "deferred",
                                                          "bounced", "rejected"};

struct pending {
    char cred[CRED_NAME_MAX + 1];
    long day;
    enum acct_event ev;
    char reason[ACCOUNTING_REASON_MAX + 1];
    long long count;
    long long bytes;
};

struct day_slot {
    long day;
    long long accepted;
};

struct cache_entry {
    struct cache_entry *next;
    char cred[CRED_NAME_MAX + 1];
    struct day_slot slots[CACHE_DAYS];
};

struct accounting {
    struct store *st;
    bool own_store;
    /* db_mu orders store access: a flush and a cache load never interleave,
     * so a count is never seen twice or missed. Take db_mu before mu. */
    pthread_mutex_t db_mu;
    pthread_mutex_t mu; /* pending, cache, flusher state */
    pthread_cond_t cond;
    struct pending *pending;
    size_t n_pending, cap_pending;
    size_t pending_events;
    struct cache_entry *cache[CACHE_BUCKETS];
    pthread_t flusher;
    bool stop, kick;
};

const char *accounting_event_name(enum acct_event ev)
{
    return (ev >= 0 && ev < ACCT_EVENT_COUNT) ? event_names[ev] : "unknown";
}

int accounting_event_parse(const char *name, enum acct_event *ev)
{
    for (int i = 0; i < ACCT_EVENT_COUNT; i++)
        if (name && strcmp(name, event_names[i]) == 0) {
            *ev = (enum acct_event)i;
            return 0;
        }
    return -1;
}

static long day_of(time_t t)
{
    return (long)(t >= 0 ? t / SECONDS_PER_DAY : (t - SECONDS_PER_DAY + 1) / SECONDS_PER_DAY);
}

static void day_string(long day, char out[11])
{
    time_t t = (time_t)day * SECONDS_PER_DAY;
    struct tm tm;
    gmtime_r(&t, &tm);
    if (strftime(out, 11, "%Y-%m-%d", &tm) == 0)
        snprintf(out, 11, "0000-00-00");
}

time_t accounting_period_start(enum cred_period per, time_t now)
{
    struct tm tm;
    gmtime_r(&now, &tm);
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    if (per == CRED_PER_MONTH)
        tm.tm_mday = 1;
    else if (per != CRED_PER_DAY)
        return now;
    return timegm(&tm);
}

static const char *cred_key(const char *cred)
{
    return cred && *cred ? cred : ACCOUNTING_NO_CRED;
}

static unsigned bucket_of(const char *cred)
{
    unsigned h = 2166136261u;
    for (const char *p = cred; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % CACHE_BUCKETS;
}

static struct cache_entry *cache_find(struct accounting *a, const char *cred)
{
    for (struct cache_entry *e = a->cache[bucket_of(cred)]; e; e = e->next)
        if (strcmp(e->cred, cred) == 0)
            return e;
    return NULL;
}

/* Adds to a ring slot unless the slot already holds a newer day (an event
 * older than the cache window: no quota period looks that far back). */
static void slot_add(struct cache_entry *e, long day, long long n)
{
    struct day_slot *s = &e->slots[((day % CACHE_DAYS) + CACHE_DAYS) % CACHE_DAYS];
    if (s->day > day)
        return;
    if (s->day < day) {
        s->day = day;
        s->accepted = 0;
    }
    s->accepted += n;
}

/* --- flushing --- */

static int pending_add(struct accounting *a, const char *cred, long day, enum acct_event ev,
                       const char *reason, long long count, long long bytes)
{
    for (size_t i = 0; i < a->n_pending; i++) {
        struct pending *p = &a->pending[i];
        if (p->day == day && p->ev == ev && strcmp(p->cred, cred) == 0 &&
            strcmp(p->reason, reason) == 0) {
            p->count += count;
            p->bytes += bytes;
            return 0;
        }
    }
    if (a->n_pending == a->cap_pending) {
        size_t cap = a->cap_pending ? a->cap_pending * 2 : 32;
        struct pending *np = realloc(a->pending, cap * sizeof *np);
        if (!np)
            return -1;
        a->pending = np;
        a->cap_pending = cap;
    }
    struct pending *p = &a->pending[a->n_pending++];
    snprintf(p->cred, sizeof p->cred, "%s", cred);
    snprintf(p->reason, sizeof p->reason, "%s", reason);
    p->day = day;
    p->ev = ev;
    p->count = count;
    p->bytes = bytes;
    return 0;
}

static int write_batch(struct accounting *a, const struct pending *v, size_t n)
{
    struct store_acct_add *rows = calloc(n, sizeof *rows);
    char(*days)[11] = calloc(n, sizeof *days);
    int r = -1;
    if (rows && days) {
        for (size_t i = 0; i < n; i++) {
            day_string(v[i].day, days[i]);
            rows[i] = (struct store_acct_add){v[i].cred,   days[i],    event_names[v[i].ev],
                                              v[i].reason, v[i].count, v[i].bytes};
        }
        r = a->st->ops->acct_add(a->st->h, rows, n) == 0 ? 0 : -1;
    }
    free(rows);
    free(days);
    return r;
}

/* db_mu held. */
static int flush_locked(struct accounting *a)
{
    pthread_mutex_lock(&a->mu);
    struct pending *batch = a->pending;
    size_t n = a->n_pending, events = a->pending_events;
    a->pending = NULL;
    a->n_pending = a->cap_pending = a->pending_events = 0;
    pthread_mutex_unlock(&a->mu);
    if (n == 0) {
        free(batch);
        return 0;
    }
    int r = write_batch(a, batch, n);
    if (r < 0) {
        /* Put the sums back; they go out with the next flush. */
        pthread_mutex_lock(&a->mu);
        for (size_t i = 0; i < n; i++)
            pending_add(a, batch[i].cred, batch[i].day, batch[i].ev, batch[i].reason,
                        batch[i].count, batch[i].bytes);
        a->pending_events += events;
        pthread_mutex_unlock(&a->mu);
    }
    free(batch);
    return r;
}

int accounting_flush(struct accounting *a)
{
    pthread_mutex_lock(&a->db_mu);
    int r = flush_locked(a);
    pthread_mutex_unlock(&a->db_mu);
    return r;
}

static void *flusher_main(void *arg)
{
    struct accounting *a = arg;
    for (;;) {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += ACCOUNTING_FLUSH_MS / 1000;
        deadline.tv_nsec += (ACCOUNTING_FLUSH_MS % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&a->mu);
        while (!a->stop && !a->kick)
            if (pthread_cond_timedwait(&a->cond, &a->mu, &deadline) == ETIMEDOUT)
                break;
        bool stop = a->stop;
        a->kick = false;
        pthread_mutex_unlock(&a->mu);
        accounting_flush(a);
        if (stop)
            return NULL;
    }
}

/* --- public --- */

struct accounting *accounting_open_store(struct store *st, bool own, char *err, size_t errlen)
{
    struct accounting *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        if (own)
            store_close(st);
        return NULL;
    }
    a->st = st;
    a->own_store = own;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->db_mu, NULL);
    if (pthread_create(&a->flusher, NULL, flusher_main, a) != 0) {
        snprintf(err, errlen, "cannot start the accounting flusher");
        if (own)
            store_close(st);
        pthread_cond_destroy(&a->cond);
        pthread_mutex_destroy(&a->mu);
        pthread_mutex_destroy(&a->db_mu);
        free(a);
        return NULL;
    }
    return a;
}

struct accounting *accounting_open(const char *db_path, char *err, size_t errlen)
{
    struct store_config sc = {.backend = STORE_SQLITE, .path = db_path};
    struct store *st = store_open(&sc, err, errlen);
    return st ? accounting_open_store(st, true, err, errlen) : NULL;
}

void accounting_close(struct accounting *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->flusher, NULL);
    accounting_flush(a);
    if (a->own_store)
        store_close(a->st);
    for (size_t b = 0; b < CACHE_BUCKETS; b++)
        while (a->cache[b]) {
            struct cache_entry *e = a->cache[b];
            a->cache[b] = e->next;
            free(e);
        }
    free(a->pending);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->db_mu);
    free(a);
}

int accounting_add_at(struct accounting *a, const char *cred, enum acct_event ev,
                      const char *reason, long long bytes, time_t when)
{
    cred = cred_key(cred);
    if (ev < 0 || ev >= ACCT_EVENT_COUNT || strlen(cred) > CRED_NAME_MAX)
        return -1;
    long day = day_of(when);
    pthread_mutex_lock(&a->mu);
    int r = pending_add(a, cred, day, ev, reason ? reason : "", 1, bytes > 0 ? bytes : 0);
    if (r == 0) {
        if (ev == ACCT_ACCEPTED) {
            struct cache_entry *e = cache_find(a, cred);
            if (e)
                slot_add(e, day, 1);
        }
        if (++a->pending_events >= ACCOUNTING_FLUSH_EVENTS && !a->kick) {
            a->kick = true;
            pthread_cond_signal(&a->cond);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return r;
}

int accounting_add(struct accounting *a, const char *cred, enum acct_event ev, const char *reason,
                   long long bytes)
{
    return accounting_add_at(a, cred, ev, reason, bytes, time(NULL));
}

static long day_parse(const char *d)
{
    struct tm tm = {0};
    if (!d || sscanf(d, "%4d-%2d-%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday) != 3)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return day_of(timegm(&tm));
}

struct load_ctx {
    struct cache_entry *e;
    long long *total;
};

static int load_row(const struct store_acct_row *row, void *arg)
{
    struct load_ctx *l = arg;
    long day = day_parse(row->day);
    if (day < 0)
        return 0;
    if (l->e)
        slot_add(l->e, day, row->count);
    else
        *l->total += row->count;
    return 0;
}

/* Accepted counts per day from the store, from first_day on, plus pending
 * ones; into e (fresh slots) or, if e is NULL, summed into *total. db_mu and
 * mu held. */
static int load_accepted(struct accounting *a, const char *cred, long first_day,
                         struct cache_entry *e, long long *total)
{
    char day[11];
    day_string(first_day, day);
    struct load_ctx l = {e, total};
    if (a->st->ops->acct_query(a->st->h, cred, day, true, load_row, &l) < 0)
        return -1;
    for (size_t i = 0; i < a->n_pending; i++) {
        const struct pending *p = &a->pending[i];
        if (p->ev != ACCT_ACCEPTED || p->day < first_day || strcmp(p->cred, cred) != 0)
            continue;
        if (e)
            slot_add(e, p->day, p->count);
        else
            *total += p->count;
    }
    return 0;
}

static long long cache_sum(const struct cache_entry *e, long since_day)
{
    long long n = 0;
    for (size_t i = 0; i < CACHE_DAYS; i++)
        if (e->slots[i].day >= since_day)
            n += e->slots[i].accepted;
    return n;
}

long long accounting_count(struct accounting *a, const char *cred, time_t since)
{
    cred = cred_key(cred);
    if (strlen(cred) > CRED_NAME_MAX)
        return -1;
    long since_day = day_of(since), today = day_of(time(NULL));
    bool cacheable = since_day >= today - CACHE_WINDOW;
    if (cacheable) {
        pthread_mutex_lock(&a->mu);
        struct cache_entry *e = cache_find(a, cred);
        long long n = e ? cache_sum(e, since_day) : 0;
        pthread_mutex_unlock(&a->mu);
        if (e)
            return n;
    }
    pthread_mutex_lock(&a->db_mu);
    pthread_mutex_lock(&a->mu);
    long long total = 0;
    int r = 0;
    if (!cacheable) {
        r = load_accepted(a, cred, since_day, NULL, &total);
    } else {
        struct cache_entry *e = cache_find(a, cred);
        if (!e) {
            e = calloc(1, sizeof *e);
            if (!e) {
                r = -1;
            } else {
                snprintf(e->cred, sizeof e->cred, "%s", cred);
                for (size_t i = 0; i < CACHE_DAYS; i++)
                    e->slots[i].day = -1;
                r = load_accepted(a, cred, today - CACHE_WINDOW, e, NULL);
                if (r == 0) {
                    unsigned b = bucket_of(cred);
                    e->next = a->cache[b];
                    a->cache[b] = e;
                } else {
                    free(e);
                    e = NULL;
                }
            }
        }
        if (e)
            total = cache_sum(e, since_day);
    }
    pthread_mutex_unlock(&a->mu);
    pthread_mutex_unlock(&a->db_mu);
    return r < 0 ? -1 : total;
}

int accounting_over_quota(struct accounting *a, const struct cred *c, time_t now)
{
    if (!c || c->quota.count <= 0 || c->quota.per == CRED_PER_NONE)
        return 0;
    long long used = accounting_count(a, c->name, accounting_period_start(c->quota.per, now));
    if (used < 0)
        return -1;
    return used + 1 > c->quota.count ? 1 : 0;
}

int accounting_quota_take(struct accounting *a, const struct cred *c, time_t now)
{
    return accounting_quota_reserve(a, c, now, NULL);
}

int accounting_rate_take(struct accounting *a, const struct cred *c, time_t now, unsigned *retry_s)
{
    *retry_s = 0;
    if (!a || !c || c->rate.count <= 0 || c->rate.per == CRED_PER_NONE || !a->st->ops->shared)
        return 1;
    long long period = cred_period_seconds(c->rate.per);
    if (period <= 0)
        return 1;
    char key[CRED_NAME_MAX + 16], window[24];
    snprintf(key, sizeof key, "rate:%s", c->name);
    snprintf(window, sizeof window, "%lld", (long long)now / period);
    long long used = 0;
    int r = a->st->ops->counter_take(a->st->h, key, window, c->rate.count, 0, &used);
    if (r == 0)
        *retry_s = (unsigned)(period - (long long)now % period);
    return r < 0 ? -1 : r;
}

void accounting_quota_give_back(struct accounting *a, struct quota_ticket *t)
{
    if (!a || !t || !t->held)
        return;
    t->held = false;
    if (a->st->ops->counter_give(a->st->h, t->key, t->window) < 0)
        log_event(LOG_WARN, "accounting.quota_give_back_failed", "key", "%s", t->key, "window",
                  "%s", t->window, NULL);
}

int accounting_quota_reserve(struct accounting *a, const struct cred *c, time_t now,
                             struct quota_ticket *t)
{
    if (t)
        t->held = false;
    if (!c || c->quota.count <= 0 || c->quota.per == CRED_PER_NONE)
        return 1;
    time_t start = accounting_period_start(c->quota.per, now);
    /* the first reservation of a period starts from what accounting already
     * counted (a store that counted before reservations existed) */
    long long seed = accounting_count(a, c->name, start);
    if (seed < 0)
        return -1;
    char key[CRED_NAME_MAX + 16], period[16];
    snprintf(key, sizeof key, "quota:%s", c->name);
    day_string(day_of(start), period);
    if (c->quota.per == CRED_PER_MONTH)
        period[7] = 0; /* "YYYY-MM" */
    long long used = 0;
    int r = a->st->ops->counter_take(a->st->h, key, period, c->quota.count, seed, &used);
    if (r == 1 && t) {
        t->held = true;
        snprintf(t->key, sizeof t->key, "%s", key);
        snprintf(t->window, sizeof t->window, "%s", period);
    }
    return r < 0 ? -1 : r;
}

struct query_ctx {
    int (*fn)(const struct accounting_row *row, void *arg);
    void *arg;
};

static int query_row(const struct store_acct_row *r, void *arg)
{
    struct query_ctx *q = arg;
    struct accounting_row row = {r->cred, r->day, ACCT_ACCEPTED, r->reason, r->count, r->bytes};
    if (accounting_event_parse(r->event, &row.event) < 0)
        return 0;
    return q->fn(&row, q->arg);
}

int accounting_query(struct accounting *a, const char *cred, time_t since,
                     int (*fn)(const struct accounting_row *row, void *arg), void *arg)
{
    pthread_mutex_lock(&a->db_mu);
    flush_locked(a);
    char day[11];
    day_string(day_of(since), day);
    struct query_ctx q = {fn, arg};
    int r = a->st->ops->acct_query(a->st->h, cred, day, false, query_row, &q) < 0 ? -1 : 0;
    pthread_mutex_unlock(&a->db_mu);
    return r;
}
