/* Scheduler over the spool's in-memory index: a min-heap of due times with
 * lazy deletion (an entry is stale when the message's next_attempt moved).
 * Due times are monotonic; attempts start from event-loop callbacks only,
 * a bounded batch per turn, so no completion ever nests another dispatch. */
#include "queue/queue.h"

#include "core/config.h"
#include "core/events.h"
#include "core/log.h"
#include "core/relay.h"
#include "deliver/deliver.h"
#include "deliver/dsn.h"
#include "queue/clock.h"
#include "queue/outcome.h"
#include "queue/track.h"
#include "spool/spool.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define MAX_INFLIGHT 256
/* Attempts started per event-loop turn: between turns the loop serves new
 * sessions, upstream replies and completions, however large the backlog. */
#define DISPATCH_BATCH 64
/* Mail released after an upstream recovers runs only while fewer attempts
 * than this are in flight, so new and due mail never queue behind it. */
#define RELEASE_INFLIGHT 64
/* A start that failed locally (spool read, memory) is tried again after: */
#define START_RETRY_MS 5000

struct due {
    int64_t when_ms; /* monotonic */
    int64_t wall;    /* the message's next_attempt when pushed: stale if it moved */
    uint64_t id;
};

struct queue {
    struct relay *r;
    struct due *heap;
    size_t n, cap;
    struct event *timer; /* the earliest due time */
    struct event *kick;  /* work is due now: one more dispatch turn */
    size_t inflight;
    bool quiesced;
    uint64_t *busy;     /* ids being attempted: never start a second attempt */
    double *busy_since; /* when each attempt started */
    size_t n_busy, cap_busy;
    uint64_t *bounced; /* revived dead letters whose bounce already went out */
    size_t n_bounced, cap_bounced;
    struct track track;
    uint64_t *rel; /* recovery release list: [rel_head, rel_n) waits */
    size_t rel_head, rel_n, rel_cap;
    struct qclock clk; /* the last reading, to notice wall-clock steps */
};

/* Reads both clocks; a wall-clock step since the last reading is logged (it
 * changes nothing here: schedules and ages are monotonic). */
static struct qclock clock_now(struct queue *q)
{
    struct qclock c;
    qclock_read(&c);
    int64_t step = q->clk.mono_ms ? qclock_step(&q->clk, &c) : 0;
    if (step)
        log_event(LOG_WARN, "queue.clock_step", "step_s", "#%lld", (long long)step, "effect", "%s",
                  "none: retries and message lifetimes use the monotonic clock", NULL);
    q->clk = c;
    return c;
}

/* The scheduler's record of a message, made on first sight. */
static struct track_entry *tracked(struct queue *q, const struct spool_msg *m,
                                   const struct qclock *now)
{
    return track_put(&q->track, m->id, qclock_since_ms(now, m->received));
}

/* ---- heap ---- */

static void heap_push(struct queue *q, int64_t when_ms, int64_t wall, uint64_t id)
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
        if (q->heap[p].when_ms <= when_ms)
            break;
        q->heap[i] = q->heap[p];
        i = p;
    }
    q->heap[i] = (struct due){when_ms, wall, id};
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
        if (c + 1 < q->n && q->heap[c + 1].when_ms < q->heap[c].when_ms)
            c++;
        if (q->heap[c].when_ms >= last.when_ms)
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

/* A dead letter that is retried has bounced already: it must not bounce
 * again when it fails again. */
static bool bounced_has(const struct queue *q, uint64_t id)
{
    for (size_t i = 0; i < q->n_bounced; i++)
        if (q->bounced[i] == id)
            return true;
    return false;
}

static void bounced_add(struct queue *q, uint64_t id)
{
    if (bounced_has(q, id))
        return;
    if (q->n_bounced == q->cap_bounced) {
        size_t nc = q->cap_bounced ? q->cap_bounced * 2 : 16;
        uint64_t *b = realloc(q->bounced, nc * sizeof *b);
        if (!b)
            return;
        q->bounced = b;
        q->cap_bounced = nc;
    }
    q->bounced[q->n_bounced++] = id;
}

static void bounced_del(struct queue *q, uint64_t id)
{
    for (size_t i = 0; i < q->n_bounced; i++)
        if (q->bounced[i] == id) {
            q->bounced[i] = q->bounced[--q->n_bounced];
            return;
        }
}

/* ---- recovery release list ---- */

static bool release_waiting(const struct queue *q)
{
    return q->rel_head < q->rel_n;
}

/* Queues id for a paced attempt; false when out of memory. */
static bool release_push(struct queue *q, struct track_entry *e)
{
    if (e->flags & TRACK_RELEASE_QUEUED)
        return true;
    if (q->rel_n == q->rel_cap) {
        if (q->rel_head > 0) { /* reuse the consumed front */
            memmove(q->rel, q->rel + q->rel_head, (q->rel_n - q->rel_head) * sizeof *q->rel);
            q->rel_n -= q->rel_head;
            q->rel_head = 0;
        } else {
            size_t nc = q->rel_cap ? q->rel_cap * 2 : 1024;
            uint64_t *v = realloc(q->rel, nc * sizeof *v);
            if (!v)
                return false;
            q->rel = v;
            q->rel_cap = nc;
        }
    }
    q->rel[q->rel_n++] = e->id;
    e->flags |= TRACK_RELEASE_QUEUED;
    return true;
}

/* ---- dispatch ---- */

static void on_attempt_done(void *arg, uint64_t id, struct deliver_result *res);

static void kick(struct queue *q)
{
    if (!q->quiesced)
        event_active(q->kick, EV_TIMEOUT, 0);
}

/* Makes sure the next dispatch comes: now when something is due, else at the
 * earliest due time. With every slot taken a completion kicks instead. */
static void arm(struct queue *q, const struct qclock *now)
{
    if (q->quiesced)
        return;
    if (release_waiting(q) && q->inflight < RELEASE_INFLIGHT)
        kick(q);
    if (!q->n || q->inflight >= MAX_INFLIGHT)
        return;
    int64_t delay = q->heap[0].when_ms - now->mono_ms;
    if (delay <= 0) {
        kick(q);
        return;
    }
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    event_add(q->timer, &tv);
}

static void start(struct queue *q, const struct spool_msg *m, const struct qclock *now)
{
    uint64_t id = m->id;
    int64_t wall = m->next_attempt;
    busy_add(q, id);
    q->inflight++;
    /* the outcome may come back before this returns (no upstream available):
     * on_attempt_done only records it and asks for another turn */
    if (deliver_start(q->r->deliver, m, on_attempt_done, q) < 0) {
        q->inflight--;
        busy_del(q, id);
        heap_push(q, now->mono_ms + START_RETRY_MS, wall, id);
    }
}

static void dispatch(struct queue *q)
{
    if (q->quiesced)
        return;
    struct qclock now = clock_now(q);
    int budget = DISPATCH_BATCH;
    while (budget > 0 && q->n && q->heap[0].when_ms <= now.mono_ms && q->inflight < MAX_INFLIGHT) {
        struct due d = heap_pop(q);
        const struct spool_msg *m = spool_get(q->r->spool, d.id);
        if (!m || m->state != SPOOL_MSG_ACTIVE || m->next_attempt != d.wall || busy_has(q, d.id))
            continue; /* stale entry */
        budget--;
        start(q, m, &now);
    }
    /* released mail takes only what due mail left of this turn */
    while (budget > 0 && release_waiting(q) && q->inflight < RELEASE_INFLIGHT) {
        uint64_t id = q->rel[q->rel_head++];
        struct track_entry *e = track_get(&q->track, id);
        if (e)
            e->flags &= ~(unsigned)TRACK_RELEASE_QUEUED;
        const struct spool_msg *m = spool_get(q->r->spool, id);
        if (!m || m->state != SPOOL_MSG_ACTIVE || busy_has(q, id))
            continue; /* delivered, held or deleted meanwhile, or running */
        budget--;
        start(q, m, &now);
    }
    if (!release_waiting(q))
        q->rel_head = q->rel_n = 0;
    arm(q, &now);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dispatch(arg);
}

static void schedule(struct queue *q, uint64_t id, int64_t when_ms, int64_t wall,
                     const struct qclock *now)
{
    heap_push(q, when_ms, wall, id);
    if (q->heap[0].id == id)
        arm(q, now);
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
    int64_t now = (int64_t)time(NULL); /* dates in the report are wall-clock */
    if (dsn_build(q->r->spool, m, res, why, cfg->hostname, now, &dsn, &len) < 0)
        return;
    const char *rcpt = m->sender;
    struct spool_envelope env = {.sender = "",
                                 .rcpts = &rcpt,
                                 .n_rcpts = 1,
                                 .flags = SPOOL_F_BOUNCE,
                                 .received = now,
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
        track_del(&q->track, id);
        kick(q);
        return; /* deleted while in flight */
    }
    struct qclock clk = clock_now(q);
    int64_t now = clk.wall_s;
    /* the age runs on the monotonic clock: a wall-clock step never expires
     * fresh mail nor keeps old mail forever */
    struct track_entry *te = tracked(q, m, &clk);
    int64_t born_ms = te ? te->born_ms : qclock_since_ms(&clk, m->received);
    const struct outcome_params op = {r->cfg->max_lifetime, r->cfg->retry_base, r->cfg->retry_cap};
    struct outcome_rcpts rc;
    outcome_rcpts(res, m->n_rcpts, (clk.mono_ms - born_ms) / 1000, m->last_reply, &op, &rc);
    for (uint32_t i = 0; i < res->n_rcpts && i < m->n_rcpts; i++) {
        const char *st = outcome_rcpt_status(res, i);
        if (st)
            events_delivery(r, m, i, st, res->upstream, res->rcpt[i].reply, took);
    }
    /* the bounce is put first: a crash after it and before the marks may
     * bounce twice, but never loses the bounce */
    if (rc.bounce && !bounced_has(q, id))
        bounce(q, m, res, "permanent failure");
    char dead_why[320]; /* keeps the upstream's words for `queue show` */
    snprintf(dead_why, sizeof dead_why, "failed permanently%s%.280s", QUEUE_LAST_REPLY_SEP,
             rc.final_reply);
    uint32_t n_rcpts = m->n_rcpts; /* m may be freed by the last mark */
    for (uint32_t i = 0; i < res->n_rcpts && i < n_rcpts; i++) {
        struct deliver_rcpt_result *rr = &res->rcpt[i];
        if (rr->cls == DELIVER_OK) {
            r->n.delivered++;
            spool_mark(r->spool, id, SPOOL_OP_RCPT_DELIVERED, (int)i, now, rr->reply, NULL, NULL);
        } else if (rr->cls == DELIVER_PERM) {
            r->n.failed++;
            spool_mark(r->spool, id, SPOOL_OP_RCPT_FAILED, (int)i, now, rr->reply, NULL, NULL);
        }
    }
    m = spool_get(r->spool, id); /* gone when every recipient was delivered */
    if (!m) {
        bounced_del(q, id);
        track_del(&q->track, id);
        log_event(LOG_INFO, "queue.delivered", "id", "%s", ids, "upstream", "%s", res->upstream,
                  "rcpts", "#%d", (int)rc.delivered, NULL);
        kick(q);
        return;
    }
    uint32_t pending = 0;
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        pending += m->rcpt_state[i] == SPOOL_RCPT_PENDING;
    uint64_t rnd;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint64_t)now;
    struct outcome_next nx;
    outcome_next(res, pending, rc.expired, m->attempts, now, rnd, &op, &nx);
    if (te) {
        /* remembered for the release when an upstream recovers */
        if (nx.upstream_wait)
            te->flags |= TRACK_UPSTREAM_WAIT;
        else
            te->flags &= ~(unsigned)TRACK_UPSTREAM_WAIT;
    }
    if (nx.action == OUTCOME_DEAD) {
        spool_mark(r->spool, id, SPOOL_OP_DEAD, -1, now, dead_why, NULL, NULL);
        bounced_del(q, id);
        log_event(LOG_WARN, "queue.dead", "id", "%s", ids, "failed", "#%d", (int)rc.failed, NULL);
    } else if (nx.action == OUTCOME_HOLD) {
        char why[320];
        snprintf(why, sizeof why, "%s%s", QUEUE_AUTO_HOLD_PREFIX, res->fault);
        spool_mark(r->spool, id, SPOOL_OP_HOLD, -1, now, why, NULL, NULL);
        log_event(LOG_WARN, "queue.held", "id", "%s", ids, "reason", "%s", why, NULL);
    } else {
        spool_mark(r->spool, id, SPOOL_OP_DEFER, -1, nx.next_attempt, nx.why, NULL, NULL);
        r->n.deferred++;
        schedule(q, id, clk.mono_ms + nx.delay_s * 1000, nx.next_attempt, &clk);
        log_event(LOG_INFO, "queue.deferred", "id", "%s", ids, "upstream", "%s", res->upstream,
                  "retry_in", "#%lld", (long long)nx.delay_s, "reason", "%s", nx.why ? nx.why : "",
                  "upstream_fault", "#%d", (int)res->upstream_fault, NULL);
    }
    kick(q);
}

/* ---- public ---- */

struct queue *queue_new(struct relay *r)
{
    struct queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->r = r;
    q->timer = evtimer_new(r->base, on_timer, q);
    q->kick = event_new(r->base, -1, 0, on_timer, q);
    return q;
}

void queue_free(struct queue *q)
{
    if (!q)
        return;
    event_free(q->timer);
    event_free(q->kick);
    track_free(&q->track);
    free(q->rel);
    free(q->heap);
    free(q->busy);
    free(q->busy_since);
    free(q->bounced);
    free(q);
}

struct load_ctx {
    struct queue *q;
    struct qclock now;
};

/* A reply from an upstream starts with its code; anything else in a
 * deferred message's last_reply is our account of upstream trouble. */
static bool is_upstream_reply(const char *s)
{
    return s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' &&
           (s[3] == ' ' || s[3] == '-');
}

static void load_one(void *arg, const struct spool_msg *m)
{
    struct load_ctx *c = arg;
    struct track_entry *e = tracked(c->q, m, &c->now);
    if (m->state != SPOOL_MSG_ACTIVE)
        return;
    if (e && m->attempts > 0 && m->last_reply && !is_upstream_reply(m->last_reply))
        e->flags |= TRACK_UPSTREAM_WAIT;
    /* the spool's wall-clock retry time becomes a monotonic one here */
    heap_push(c->q, qclock_due_ms(&c->now, m->next_attempt), m->next_attempt, m->id);
}

void queue_load(struct queue *q)
{
    struct load_ctx c = {.q = q, .now = clock_now(q)};
    spool_foreach(q->r->spool, load_one, &c);
    arm(q, &c.now);
}

void queue_add(struct queue *q, uint64_t id)
{
    const struct spool_msg *m = spool_get(q->r->spool, id);
    if (!m)
        return;
    struct qclock now = clock_now(q);
    tracked(q, m, &now);
    schedule(q, id, qclock_due_ms(&now, m->next_attempt), m->next_attempt, &now);
}

const char *queue_upstream_reply(const char *last_reply)
{
    if (!last_reply)
        return NULL;
    const char *p = last_reply, *hit = NULL;
    while ((p = strstr(p, QUEUE_LAST_REPLY_SEP))) {
        p += strlen(QUEUE_LAST_REPLY_SEP);
        hit = p;
    }
    if (hit)
        return *hit && strcmp(hit, "none") != 0 ? hit : NULL;
    return strncmp(last_reply, "held by operator", 16) == 0 ? NULL : last_reply;
}

int queue_retry(struct queue *q, uint64_t id)
{
    const struct spool_msg *m = spool_get(q->r->spool, id);
    if (!m)
        return -ENOENT;
    struct qclock now = clock_now(q);
    bool was_dead = m->state == SPOOL_MSG_DEAD;
    tracked(q, m, &now);
    int r = spool_mark(q->r->spool, id, SPOOL_OP_RELEASE, -1, now.wall_s, NULL, NULL, NULL);
    if (r == 0 && was_dead)
        bounced_add(q, id);
    if (r == 0)
        schedule(q, id, now.mono_ms, now.wall_s, &now);
    return r;
}

int queue_hold(struct queue *q, uint64_t id)
{
    const struct spool_msg *m = spool_get(q->r->spool, id);
    if (!m)
        return -ENOENT;
    if (m->state != SPOOL_MSG_ACTIVE)
        return -EINVAL;
    char why[320] = "held by operator";
    const char *last = queue_upstream_reply(m->last_reply);
    if (last) /* the hold replaces the reply text; keep the upstream's words */
        snprintf(why, sizeof why, "held by operator%s%.280s", QUEUE_LAST_REPLY_SEP, last);
    return spool_mark(q->r->spool, id, SPOOL_OP_HOLD, -1, (int64_t)time(NULL), why, NULL, NULL);
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
    bounced_del(q, id);
    track_del(&q->track, id);
    return spool_mark(q->r->spool, id, SPOOL_OP_DELETE, -1, (int64_t)time(NULL),
                      "deleted by operator", NULL, NULL);
}

struct flush_ctx {
    struct queue *q;
    unsigned states; /* bit per enum spool_msg_state to revive */
    bool auto_held_only;
    uint64_t *ids;
    size_t n, cap;
};

#define STATE_BIT(s) (1u << (s))

static void collect(void *arg, const struct spool_msg *m)
{
    struct flush_ctx *c = arg;
    if (c->auto_held_only) {
        if (m->state != SPOOL_MSG_HELD || !m->last_reply ||
            strncmp(m->last_reply, QUEUE_AUTO_HOLD_PREFIX, strlen(QUEUE_AUTO_HOLD_PREFIX)) != 0)
            return;
    } else if (!(c->states & STATE_BIT(m->state))) {
        return;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->ids = realloc(c->ids, c->cap * sizeof *c->ids);
    }
    c->ids[c->n++] = m->id;
}

/* Makes every message in one of `states` due now; returns how many. */
static size_t revive(struct queue *q, unsigned states)
{
    struct flush_ctx c = {.q = q, .states = states};
    spool_foreach(q->r->spool, collect, &c);
    for (size_t i = 0; i < c.n; i++)
        if (!busy_has(q, c.ids[i]))
            queue_retry(q, c.ids[i]);
    free(c.ids);
    kick(q);
    return c.n;
}

void queue_flush(struct queue *q)
{
    revive(q, STATE_BIT(SPOOL_MSG_ACTIVE));
}

/* Active now, attempted through the paced release list rather than all due
 * at once: a large backlog must not delay new mail. */
static void release_paced(struct queue *q, const struct spool_msg *m, const struct qclock *now)
{
    struct track_entry *e = tracked(q, m, now);
    if (!e || !release_push(q, e))
        schedule(q, m->id, now->mono_ms, m->next_attempt, now);
}

static size_t release_auto_held(struct queue *q, const struct qclock *now)
{
    struct flush_ctx c = {.q = q, .auto_held_only = true};
    spool_foreach(q->r->spool, collect, &c);
    for (size_t i = 0; i < c.n; i++) {
        if (spool_mark(q->r->spool, c.ids[i], SPOOL_OP_RELEASE, -1, now->wall_s, NULL, NULL, NULL) <
            0)
            continue;
        const struct spool_msg *m = spool_get(q->r->spool, c.ids[i]);
        if (m)
            release_paced(q, m, now);
    }
    free(c.ids);
    return c.n;
}

void queue_release_auto(struct queue *q)
{
    struct qclock now = clock_now(q);
    size_t n = release_auto_held(q, &now);
    if (n)
        log_event(LOG_INFO, "queue.released_auto", "messages", "#%zu", n, NULL);
    kick(q);
}

struct waiting_ctx {
    struct queue *q;
    uint64_t *ids;
    size_t n, cap;
};

static void collect_waiting(void *arg, const struct spool_msg *m)
{
    struct waiting_ctx *c = arg;
    struct track_entry *e = track_get(&c->q->track, m->id);
    if (m->state != SPOOL_MSG_ACTIVE || !e || !(e->flags & TRACK_UPSTREAM_WAIT) ||
        (e->flags & TRACK_RELEASE_QUEUED) || busy_has(c->q, m->id))
        return;
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 256;
        uint64_t *v = realloc(c->ids, nc * sizeof *v);
        if (!v)
            return;
        c->ids = v;
        c->cap = nc;
    }
    c->ids[c->n++] = m->id;
}

void queue_upstream_recovered(struct queue *q)
{
    struct qclock now = clock_now(q);
    size_t held = release_auto_held(q, &now);
    /* mail deferred only because no upstream could take it need not wait
     * out its backoff: the release list attempts it now, paced */
    struct waiting_ctx c = {.q = q};
    spool_foreach(q->r->spool, collect_waiting, &c);
    for (size_t i = 0; i < c.n; i++) {
        const struct spool_msg *m = spool_get(q->r->spool, c.ids[i]);
        if (m)
            release_paced(q, m, &now);
    }
    free(c.ids);
    if (held || c.n)
        log_event(LOG_INFO, "queue.released_on_recovery", "held", "#%zu", held, "deferred", "#%zu",
                  c.n, NULL);
    kick(q);
}

size_t queue_retry_all(struct queue *q, bool dead_too)
{
    return revive(q, STATE_BIT(SPOOL_MSG_ACTIVE) | STATE_BIT(SPOOL_MSG_HELD) |
                         (dead_too ? STATE_BIT(SPOOL_MSG_DEAD) : 0));
}

size_t queue_release_all(struct queue *q)
{
    return revive(q, STATE_BIT(SPOOL_MSG_HELD));
}

size_t queue_quiesce(struct queue *q)
{
    q->quiesced = true;
    event_del(q->timer);
    event_del(q->kick);
    return q->inflight;
}

size_t queue_inflight(const struct queue *q)
{
    return q->inflight;
}
