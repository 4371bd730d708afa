/* Scheduler over the spool's in-memory index: a min-heap of due times with
 * lazy deletion (an entry is stale when the message's next_attempt moved). */
#include "queue/queue.h"

#include "core/config.h"
#include "core/events.h"
#include "core/log.h"
#include "core/relay.h"
#include "deliver/deliver.h"
#include "deliver/dsn.h"
#include "spool/spool.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define MAX_INFLIGHT 256

struct due {
    int64_t when;
    uint64_t id;
};

struct queue {
    struct relay *r;
    struct due *heap;
    size_t n, cap;
    struct event *timer;
    size_t inflight;
    bool quiesced;
    uint64_t *busy;     /* ids being attempted: never start a second attempt */
    double *busy_since; /* when each attempt started */
    size_t n_busy, cap_busy;
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

int64_t queue_backoff(int64_t base, int64_t cap, uint32_t attempts, uint64_t rnd)
{
    int64_t d = base;
    for (uint32_t i = 1; i < attempts && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    if (d < 1)
        d = 1;
    return 1 + (int64_t)(rnd % (uint64_t)d);
}

/* ---- heap ---- */

static void heap_push(struct queue *q, int64_t when, uint64_t id)
{
    if (q->n == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 1024;
        struct due *h = realloc(q->heap, nc * sizeof *h);
        if (!h)
            return;
        q->heap = h;
        q->cap = nc;
    }
    size_t i = q->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (q->heap[p].when <= when)
            break;
        q->heap[i] = q->heap[p];
        i = p;
    }
    q->heap[i] = (struct due){when, id};
}

static struct due heap_pop(struct queue *q)
{
    struct due top = q->heap[0];
    struct due last = q->heap[--q->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n)
            break;
        if (c + 1 < q->n && q->heap[c + 1].when < q->heap[c].when)
            c++;
        if (q->heap[c].when >= last.when)
            break;
        q->heap[i] = q->heap[c];
        i = c;
    }
    if (q->n)
        q->heap[i] = last;
    return top;
}

static bool busy_has(const struct queue *q, uint64_t id)
{
    for (size_t i = 0; i < q->n_busy; i++)
        if (q->busy[i] == id)
            return true;
    return false;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void busy_add(struct queue *q, uint64_t id)
{
    if (q->n_busy == q->cap_busy) {
        size_t nc = q->cap_busy ? q->cap_busy * 2 : 64;
        uint64_t *b = realloc(q->busy, nc * sizeof *b);
        if (!b)
            return;
        q->busy = b;
        double *t = realloc(q->busy_since, nc * sizeof *t);
        if (!t)
            return;
        q->busy_since = t;
        q->cap_busy = nc;
    }
    q->busy_since[q->n_busy] = mono_now();
    q->busy[q->n_busy++] = id;
}

/* Removes id; returns how long its attempt took, in seconds. */
static double busy_del(struct queue *q, uint64_t id)
{
    for (size_t i = 0; i < q->n_busy; i++)
        if (q->busy[i] == id) {
            double took = mono_now() - q->busy_since[i];
            q->n_busy--;
            q->busy[i] = q->busy[q->n_busy];
            q->busy_since[i] = q->busy_since[q->n_busy];
            return took;
        }
    return 0;
}

/* ---- dispatch ---- */

static void arm(struct queue *q);
static void on_attempt_done(void *arg, uint64_t id, struct deliver_result *res);

static void dispatch(struct queue *q)
{
    int64_t now = now_s();
    while (!q->quiesced && q->n && q->heap[0].when <= now && q->inflight < MAX_INFLIGHT) {
        struct due d = heap_pop(q);
        const struct spool_msg *m = spool_get(q->r->spool, d.id);
        if (!m || m->state != SPOOL_MSG_ACTIVE || m->next_attempt != d.when || busy_has(q, d.id))
            continue; /* stale entry */
        busy_add(q, d.id);
        q->inflight++;
        if (deliver_start(q->r->deliver, m, on_attempt_done, q) < 0) {
            q->inflight--;
            busy_del(q, d.id);
            heap_push(q, now + 5, d.id);
        }
    }
    arm(q);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dispatch(arg);
}

static void arm(struct queue *q)
{
    if (!q->n || q->quiesced)
        return;
    int64_t delay = q->heap[0].when - now_s();
    if (q->inflight >= MAX_INFLIGHT)
        return; /* a completion re-dispatches */
    struct timeval tv = {delay > 0 ? delay : 0, delay > 0 ? 0 : 1000};
    event_add(q->timer, &tv);
}

static void schedule(struct queue *q, uint64_t id, int64_t when)
{
    heap_push(q, when, id);
    if (q->heap[0].id == id)
        arm(q);
}

/* ---- outcomes ---- */

struct bounce_put {
    struct queue *q;
    char *dsn; /* the spool borrows it until the put completes */
    uint64_t original;
};

/* A bounce counts as sent once it is durable: on a full disk the spool
 * keeps appending it again, and this runs only when that worked. */
static void bounce_committed(void *arg, int err, uint64_t id)
{
    struct bounce_put *b = arg;
    if (!err) {
        char ids[17], oid[17];
        b->q->r->n.bounces++;
        log_event(LOG_INFO, "queue.bounce", "id", "%s", spool_id_str(id, ids), "original", "%s",
                  spool_id_str(b->original, oid), NULL);
        queue_add(b->q, id);
    }
    free(b->dsn);
    free(b);
}

static void bounce(struct queue *q, const struct spool_msg *m, const struct deliver_result *res,
                   const char *why)
{
    const struct config *cfg = q->r->cfg;
    if (!cfg->bounces || m->sender[0] == 0 || (m->flags & SPOOL_F_BOUNCE))
        return;
    char *dsn = NULL;
    size_t len = 0;
    if (dsn_build(q->r->spool, m, res, why, cfg->hostname, now_s(), &dsn, &len) < 0)
        return;
    const char *rcpt = m->sender;
    struct spool_envelope env = {.sender = "",
                                 .rcpts = &rcpt,
                                 .n_rcpts = 1,
                                 .flags = SPOOL_F_BOUNCE,
                                 .received = now_s(),
                                 .meta = "origin=dsn\n"};
    uint64_t id = spool_new_id(q->r->spool);
    struct iovec iov = {dsn, len};
    struct bounce_put *b = malloc(sizeof *b);
    if (!b) {
        free(dsn);
        return;
    }
    *b = (struct bounce_put){q, dsn, m->id};
    if (spool_put(q->r->spool, id, &env, &iov, 1, bounce_committed, b) < 0) {
        free(dsn);
        free(b);
    }
}

static void on_attempt_done(void *arg, uint64_t id, struct deliver_result *res)
{
    struct queue *q = arg;
    struct relay *r = q->r;
    q->inflight--;
    double took = busy_del(q, id);
    const struct spool_msg *m = spool_get(r->spool, id);
    char ids[17];
    spool_id_str(id, ids);
    if (!m) {
        dispatch(q);
        return; /* deleted while in flight */
    }
    int64_t now = now_s();
    bool expired = now - m->received > r->cfg->max_lifetime;
    int failed_now = 0, pending = 0, delivered = 0;
    /* expiry turns remaining temporary failures into permanent ones, except
     * when the upstream itself is at fault: that never bounces */
    for (uint32_t i = 0; i < res->n_rcpts && i < m->n_rcpts; i++) {
        struct deliver_rcpt_result *rr = &res->rcpt[i];
        if (rr->cls == DELIVER_TEMP && expired && !res->upstream_fault) {
            rr->cls = DELIVER_PERM;
            snprintf(rr->reply, sizeof rr->reply,
                     "delivery time expired after %d s; last reply: %.180s", r->cfg->max_lifetime,
                     m->last_reply ? m->last_reply : "none");
        }
    }
    for (uint32_t i = 0; i < res->n_rcpts && i < m->n_rcpts; i++) {
        const struct deliver_rcpt_result *rr = &res->rcpt[i];
        if (rr->cls == DELIVER_SKIP)
            continue;
        const char *st = rr->cls == DELIVER_OK     ? "delivered"
                         : rr->cls == DELIVER_PERM ? "failed"
                         : res->hold               ? "held"
                                                   : "deferred";
        events_delivery(r, m, i, st, res->upstream, rr->reply, took);
    }
    /* the bounce is put first: a crash after it and before the marks may
     * bounce twice, but never loses the bounce */
    bool any_perm = false;
    for (uint32_t i = 0; i < res->n_rcpts && i < m->n_rcpts; i++)
        any_perm |= res->rcpt[i].cls == DELIVER_PERM;
    if (any_perm)
        bounce(q, m, res, "permanent failure");
    uint32_t n_rcpts = m->n_rcpts; /* m may be freed by the last mark */
    for (uint32_t i = 0; i < res->n_rcpts && i < n_rcpts; i++) {
        struct deliver_rcpt_result *rr = &res->rcpt[i];
        if (rr->cls == DELIVER_OK) {
            delivered++;
            r->n.delivered++;
            spool_mark(r->spool, id, SPOOL_OP_RCPT_DELIVERED, (int)i, now, rr->reply, NULL, NULL);
        } else if (rr->cls == DELIVER_PERM) {
            failed_now++;
            r->n.failed++;
            spool_mark(r->spool, id, SPOOL_OP_RCPT_FAILED, (int)i, now, rr->reply, NULL, NULL);
        }
    }
    m = spool_get(r->spool, id); /* gone when every recipient was delivered */
    if (!m) {
        log_event(LOG_INFO, "queue.delivered", "id", "%s", ids, "upstream", "%s", res->upstream,
                  "rcpts", "#%d", delivered, NULL);
        dispatch(q);
        return;
    }
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        pending += m->rcpt_state[i] == SPOOL_RCPT_PENDING;
    if (pending == 0) {
        spool_mark(r->spool, id, SPOOL_OP_DEAD, -1, now, "failed permanently", NULL, NULL);
        log_event(LOG_WARN, "queue.dead", "id", "%s", ids, "failed", "#%d", failed_now, NULL);
    } else if (res->upstream_fault && (res->hold || expired)) {
        /* misconfigured upstreams (TLS, AUTH) hold mail until fixed; it is
         * released on SIGHUP or when a probe finds the upstream healthy */
        char why[320];
        snprintf(why, sizeof why, "%s%s", QUEUE_AUTO_HOLD_PREFIX, res->fault);
        spool_mark(r->spool, id, SPOOL_OP_HOLD, -1, now, why, NULL, NULL);
        log_event(LOG_WARN, "queue.held", "id", "%s", ids, "reason", "%s", why, NULL);
    } else {
        uint64_t rnd;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
            rnd = (uint64_t)now;
        int64_t when =
            now + queue_backoff(r->cfg->retry_base, r->cfg->retry_cap, m->attempts + 1, rnd);
        const char *why = res->upstream_fault ? res->fault : NULL;
        for (uint32_t i = 0; !why && i < res->n_rcpts; i++)
            if (res->rcpt[i].cls == DELIVER_TEMP)
                why = res->rcpt[i].reply;
        spool_mark(r->spool, id, SPOOL_OP_DEFER, -1, when, why, NULL, NULL);
        r->n.deferred++;
        schedule(q, id, when);
        log_event(LOG_INFO, "queue.deferred", "id", "%s", ids, "upstream", "%s", res->upstream,
                  "retry_in", "#%lld", (long long)(when - now), "reason", "%s", why ? why : "",
                  "upstream_fault", "#%d", (int)res->upstream_fault, NULL);
    }
    dispatch(q);
}

/* ---- public ---- */

struct queue *queue_new(struct relay *r)
{
    struct queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->r = r;
    q->timer = evtimer_new(r->base, on_timer, q);
    return q;
}

void queue_free(struct queue *q)
{
    if (!q)
        return;
    event_free(q->timer);
    free(q->heap);
    free(q->busy);
    free(q->busy_since);
    free(q);
}

static void load_one(void *arg, const struct spool_msg *m)
{
    struct queue *q = arg;
    if (m->state == SPOOL_MSG_ACTIVE)
        heap_push(q, m->next_attempt, m->id);
}

void queue_load(struct queue *q)
{
    spool_foreach(q->r->spool, load_one, q);
    arm(q);
}

void queue_add(struct queue *q, uint64_t id)
{
    const struct spool_msg *m = spool_get(q->r->spool, id);
    if (m)
        schedule(q, id, m->next_attempt);
}

int queue_retry(struct queue *q, uint64_t id)
{
    const struct spool_msg *m = spool_get(q->r->spool, id);
    if (!m)
        return -ENOENT;
    int64_t now = now_s();
    int r = spool_mark(q->r->spool, id, SPOOL_OP_RELEASE, -1, now, NULL, NULL, NULL);
    if (r == 0)
        schedule(q, id, now);
    return r;
}

int queue_hold(struct queue *q, uint64_t id)
{
    const struct spool_msg *m = spool_get(q->r->spool, id);
    if (!m)
        return -ENOENT;
    if (m->state != SPOOL_MSG_ACTIVE)
        return -EINVAL;
    return spool_mark(q->r->spool, id, SPOOL_OP_HOLD, -1, now_s(), "held by operator", NULL, NULL);
}

int queue_release(struct queue *q, uint64_t id)
{
    const struct spool_msg *m = spool_get(q->r->spool, id);
    if (!m)
        return -ENOENT;
    if (m->state != SPOOL_MSG_HELD)
        return -EINVAL;
    return queue_retry(q, id);
}

int queue_delete(struct queue *q, uint64_t id)
{
    if (!spool_get(q->r->spool, id))
        return -ENOENT;
    return spool_mark(q->r->spool, id, SPOOL_OP_DELETE, -1, now_s(), "deleted by operator", NULL,
                      NULL);
}

struct flush_ctx {
    struct queue *q;
    bool dead_too, auto_held_only;
    uint64_t *ids;
    size_t n, cap;
};

static void collect(void *arg, const struct spool_msg *m)
{
    struct flush_ctx *c = arg;
    if (c->auto_held_only) {
        if (m->state != SPOOL_MSG_HELD || !m->last_reply ||
            strncmp(m->last_reply, QUEUE_AUTO_HOLD_PREFIX, strlen(QUEUE_AUTO_HOLD_PREFIX)) != 0)
            return;
    } else if (m->state == SPOOL_MSG_HELD || (m->state == SPOOL_MSG_DEAD && !c->dead_too)) {
        return;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->ids = realloc(c->ids, c->cap * sizeof *c->ids);
    }
    c->ids[c->n++] = m->id;
}

static void flush(struct queue *q, bool dead_too)
{
    struct flush_ctx c = {.q = q, .dead_too = dead_too};
    spool_foreach(q->r->spool, collect, &c);
    for (size_t i = 0; i < c.n; i++)
        if (!busy_has(q, c.ids[i]))
            queue_retry(q, c.ids[i]);
    free(c.ids);
    dispatch(q);
}

void queue_flush(struct queue *q)
{
    flush(q, false);
}

void queue_release_auto(struct queue *q)
{
    struct flush_ctx c = {.q = q, .auto_held_only = true};
    spool_foreach(q->r->spool, collect, &c);
    for (size_t i = 0; i < c.n; i++)
        queue_retry(q, c.ids[i]);
    if (c.n)
        log_event(LOG_INFO, "queue.released_auto", "messages", "#%zu", c.n, NULL);
    free(c.ids);
    dispatch(q);
}

void queue_retry_all(struct queue *q)
{
    flush(q, true);
}

size_t queue_quiesce(struct queue *q)
{
    q->quiesced = true;
    event_del(q->timer);
    return q->inflight;
}

size_t queue_inflight(const struct queue *q)
{
    return q->inflight;
}
