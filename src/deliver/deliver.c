/* Upstream selection and the capture upstream. Capture writes each message
 * as <id>.eml (the exact bytes an upstream would get) plus <id>.json (the
 * envelope); a batch of files is made durable with one syncfs before the
 * messages count as delivered. */
#include "deliver/deliver.h"
#include "deliver/trouble.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "core/worker.h"
#include "deliver/upstream.h"
#include "spool/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct capture_job {
    uint64_t id;
    char *data;
    size_t len;
    char *envelope_json;
    int err;
    uint32_t n_rcpts;
    uint8_t *attempt; /* 1 for recipients attempted */
    deliver_done_fn done;
    void *arg;
    char upstream[64];
    struct capture_job *next;
};

struct capture_batch {
    struct deliver *d;
    struct capture_job *jobs;
};

struct slot;

struct deliver {
    struct relay *r;
    struct slot *slots; /* one per configured upstream, in priority order */
    size_t n_slots;
    int cap_dir_fd;
    struct capture_job *cap_pending, *cap_tail;
    bool cap_active;          /* a batch is on a worker; new jobs wait in cap_pending */
    struct attempt *attempts; /* SMTP attempts under way, freed at exit if still there */
};

static int write_file(int dirfd, const char *name, const char *data, size_t len)
{
    char tmp[96];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? -errno : -ENOSPC;
            close(fd);
            unlinkat(dirfd, tmp, 0);
            return e;
        }
        off += (size_t)w;
    }
    if (close(fd) < 0) {
        int e = -errno;
        unlinkat(dirfd, tmp, 0);
        return e;
    }
    if (renameat(dirfd, tmp, dirfd, name) < 0)
        return -errno;
    return 0;
}

static void capture_work(void *arg)
{
    struct capture_batch *b = arg;
    struct deliver *d = b->d;
    int err = 0;
    for (struct capture_job *j = b->jobs; j; j = j->next) {
        char ids[17], name[64];
        spool_id_str(j->id, ids);
        snprintf(name, sizeof name, "%s.json", ids);
        j->err = write_file(d->cap_dir_fd, name, j->envelope_json, strlen(j->envelope_json));
        if (!j->err) {
            /* the .eml appears last: a reader that sees it finds the envelope */
            snprintf(name, sizeof name, "%s.eml", ids);
            j->err = write_file(d->cap_dir_fd, name, j->data, j->len);
        }
    }
    /* one flush for the whole batch */
    if (syncfs(d->cap_dir_fd) < 0)
        err = -errno;
    for (struct capture_job *j = b->jobs; j; j = j->next)
        if (!j->err)
            j->err = err;
}

static void capture_start(struct deliver *d);

static void capture_done(void *arg)
{
    struct capture_batch *b = arg;
    struct deliver *d = b->d;
    struct capture_job *j = b->jobs;
    free(b);
    while (j) {
        struct capture_job *next = j->next;
        struct deliver_result res = {.n_rcpts = j->n_rcpts};
        res.rcpt = calloc(j->n_rcpts, sizeof *res.rcpt);
        snprintf(res.upstream, sizeof res.upstream, "%s", j->upstream);
        if (j->err) {
            res.upstream_fault = true;
            snprintf(res.fault, sizeof res.fault, "capture directory write failed: %s",
                     strerror(-j->err));
        }
        for (uint32_t i = 0; res.rcpt && i < j->n_rcpts; i++) {
            if (!j->attempt[i]) {
                res.rcpt[i].cls = DELIVER_SKIP;
                continue;
            }
            res.rcpt[i].cls = j->err ? DELIVER_TEMP : DELIVER_OK;
            snprintf(res.rcpt[i].reply, sizeof res.rcpt[i].reply, "%s",
                     j->err ? res.fault : "250 2.0.0 captured");
        }
        if (res.rcpt)
            j->done(j->arg, j->id, &res);
        free(res.rcpt);
        free(j->data);
        free(j->envelope_json);
        free(j->attempt);
        free(j);
        j = next;
    }
    d->cap_active = false;
    if (d->cap_pending)
        capture_start(d);
}

static void capture_start(struct deliver *d)
{
    struct capture_batch *b = malloc(sizeof *b);
    if (!b)
        return; /* jobs stay pending; the next submission retries */
    b->d = d;
    b->jobs = d->cap_pending;
    d->cap_pending = d->cap_tail = NULL;
    d->cap_active = true;
    if (worker_submit(d->r->worker, capture_work, capture_done, b) < 0) {
        for (struct capture_job *j = b->jobs; j; j = j->next)
            j->err = -ENOMEM;
        capture_done(b);
    }
}

static char *envelope_json(const struct spool_msg *m, const char *upstream)
{
    char ids[17];
    json_t *o = json_object();
    json_object_set_new(o, "queue_id", json_string(spool_id_str(m->id, ids)));
    json_object_set_new(o, "mail_from", json_string(m->sender));
    json_t *to = json_array();
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        if (m->rcpt_state[i] == SPOOL_RCPT_PENDING)
            json_array_append_new(to, json_string(m->rcpts[i]));
    json_object_set_new(o, "rcpt_to", to);
    json_object_set_new(o, "received", json_integer(m->received));
    json_object_set_new(o, "upstream", json_string(upstream));
    json_object_set_new(o, "smtputf8", json_boolean(m->flags & SPOOL_F_SMTPUTF8));
    json_object_set_new(o, "bounce", json_boolean(m->flags & SPOOL_F_BOUNCE));
    if (m->meta)
        json_object_set_new(o, "meta", spool_meta_json(m->meta));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static int capture_submit(struct deliver *d, const struct config_upstream *u,
                          const struct spool_msg *m, deliver_done_fn done, void *arg)
{
    struct capture_job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    int r = spool_read(d->r->spool, m->id, &j->data, &j->len);
    if (r < 0) {
        free(j);
        return r;
    }
    j->id = m->id;
    j->n_rcpts = m->n_rcpts;
    j->attempt = calloc(m->n_rcpts, 1);
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        j->attempt[i] = m->rcpt_state[i] == SPOOL_RCPT_PENDING;
    j->envelope_json = envelope_json(m, u->name);
    j->done = done;
    j->arg = arg;
    snprintf(j->upstream, sizeof j->upstream, "%s", u->name);
    if (d->cap_tail)
        d->cap_tail->next = j;
    else
        d->cap_pending = j;
    d->cap_tail = j;
    if (!d->cap_active)
        capture_start(d);
    return 0;
}

/* ---- SMTP upstreams and failover ---- */

struct slot {
    char name[64];
    bool capture;
    struct upstream *up; /* NULL for capture, or when it could not be set up */
    char setup_error[320];
};

struct attempt {
    struct deliver *d;
    uint64_t id;
    char *data;
    size_t len;
    char *sender;
    char **rcpts;    /* pending recipients */
    uint32_t *index; /* their index in the message */
    size_t n;
    uint32_t n_all;
    unsigned flags;
    deliver_done_fn done;
    void *arg;
    size_t next_slot;  /* next upstream to try, in priority order */
    struct trouble tr; /* what went wrong on the upstreams tried so far */
    struct upstream_job job;
    struct attempt *prev, *next; /* in d->attempts */
};

static void attempt_free(struct attempt *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        a->d->attempts = a->next;
    if (a->next)
        a->next->prev = a->prev;
    for (size_t i = 0; i < a->n; i++)
        free(a->rcpts[i]);
    free(a->rcpts);
    free(a->index);
    free(a->sender);
    free(a->data);
    free(a);
}

static void finish(struct attempt *a, const char *upstream, const struct smtp_client_result *res)
{
    struct deliver_result out = {.n_rcpts = a->n_all};
    out.rcpt = calloc(a->n_all, sizeof *out.rcpt);
    snprintf(out.upstream, sizeof out.upstream, "%s", upstream ? upstream : "");
    for (uint32_t i = 0; out.rcpt && i < a->n_all; i++)
        out.rcpt[i].cls = DELIVER_SKIP;
    for (size_t i = 0; out.rcpt && i < a->n; i++) {
        struct deliver_rcpt_result *rr = &out.rcpt[a->index[i]];
        if (!res) {
            rr->cls = DELIVER_TEMP;
            snprintf(rr->reply, sizeof rr->reply, "%s", a->tr.fault);
            continue;
        }
        const struct smtp_client_status *st = &res->rcpts[i].status;
        snprintf(rr->reply, sizeof rr->reply, "%d %.16s %.200s", st->code, st->enhanced, st->text);
        rr->cls = trouble_rcpt_class(st->code);
    }
    if (!res) {
        out.upstream_fault = true;
        out.hold = trouble_hold(&a->tr);
        snprintf(out.fault, sizeof out.fault, "%s", a->tr.fault);
    }
    if (out.rcpt)
        a->done(a->arg, a->id, &out);
    free(out.rcpt);
    attempt_free(a);
}

static void try_next(struct attempt *a);

static void on_job_done(struct upstream_job *job, const struct upstream_outcome *o)
{
    struct attempt *a = (struct attempt *)((char *)job - offsetof(struct attempt, job));
    struct deliver *d = a->d;
    const char *name =
        a->next_slot > 0 && a->next_slot - 1 < d->n_slots ? d->slots[a->next_slot - 1].name : "";
    if (o->conn_fault) {
        trouble_note(&a->tr, name, o->reason, trouble_is_misconfig(o->category));
        try_next(a);
        return;
    }
    /* a refusal of us (not of the message) at MAIL, or of every recipient
     * for the same reason, is the upstream's trouble: fail over, never bounce */
    const struct smtp_client_result *res = o->res;
    if (trouble_refused_us(res)) {
        char why[300];
        snprintf(why, sizeof why, "refused us: %d %.16s %.200s", res->status.code,
                 res->status.enhanced, res->status.text);
        trouble_note(&a->tr, name, why, res->status.code >= 500);
        try_next(a);
        return;
    }
    finish(a, name, res);
}

static void try_next(struct attempt *a)
{
    struct deliver *d = a->d;
    while (a->next_slot < d->n_slots) {
        struct slot *sl = &d->slots[a->next_slot++];
        if (sl->capture) {
            /* capture in the failover chain: hand over to it */
            const struct spool_msg *m = spool_get(d->r->spool, a->id);
            const struct config_upstream *u = config_upstream_find(d->r->cfg, sl->name);
            if (m && u && capture_submit(d, u, m, a->done, a->arg) == 0) {
                attempt_free(a);
                return;
            }
            continue;
        }
        if (!sl->up) {
            trouble_note(&a->tr, sl->name, sl->setup_error, true);
            a->tr.tried_any = true;
            continue;
        }
        if (!upstream_available(sl->up)) {
            trouble_note(&a->tr, sl->name, upstream_last_error(sl->up),
                         trouble_is_misconfig(upstream_last_category(sl->up)));
            a->tr.tried_any = true;
            continue;
        }
        a->tr.tried_any = true;
        upstream_submit(sl->up, &a->job);
        return;
    }
    if (!a->tr.fault[0])
        snprintf(a->tr.fault, sizeof a->tr.fault, "no upstream available");
    finish(a, NULL, NULL);
}

static int smtp_start(struct deliver *d, const struct spool_msg *m, deliver_done_fn done, void *arg)
{
    struct attempt *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    int r = spool_read(d->r->spool, m->id, &a->data, &a->len);
    if (r < 0) {
        free(a);
        return r;
    }
    a->d = d;
    a->next = d->attempts;
    if (a->next)
        a->next->prev = a;
    d->attempts = a;
    a->id = m->id;
    a->done = done;
    a->arg = arg;
    a->n_all = m->n_rcpts;
    trouble_init(&a->tr);
    a->sender = strdup(m->sender);
    a->rcpts = calloc(m->n_rcpts, sizeof *a->rcpts);
    a->index = calloc(m->n_rcpts, sizeof *a->index);
    for (uint32_t i = 0; i < m->n_rcpts; i++)
        if (m->rcpt_state[i] == SPOOL_RCPT_PENDING) {
            a->rcpts[a->n] = strdup(m->rcpts[i]);
            a->index[a->n++] = i;
        }
    a->job.msg = (struct smtp_client_msg){
        .sender = a->sender,
        .rcpts = (const char *const *)a->rcpts,
        .n_rcpts = a->n,
        .data = a->data,
        .len = a->len,
        .flags = ((m->flags & SPOOL_F_SMTPUTF8) ? SMTP_CLIENT_MSG_SMTPUTF8 : 0) |
                 ((m->flags & SPOOL_F_8BIT) ? SMTP_CLIENT_MSG_8BIT : 0),
    };
    a->job.done = on_job_done;
    try_next(a);
    return 0;
}

static void slots_clear(struct deliver *d)
{
    for (size_t i = 0; i < d->n_slots; i++)
        upstream_retire(d->slots[i].up);
    free(d->slots);
    d->slots = NULL;
    d->n_slots = 0;
}

struct deliver *deliver_new(struct relay *r, char *err, unsigned long errlen)
{
    struct deliver *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->r = r;
    d->cap_dir_fd = -1;
    if (deliver_reload(d, err, errlen) < 0) {
        free(d);
        return NULL;
    }
    return d;
}

int deliver_reload(struct deliver *d, char *err, unsigned long errlen)
{
    const struct config *cfg = d->r->cfg;
    bool need_capture = false;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        need_capture |= cfg->upstreams[i].capture;
    if (need_capture && d->cap_dir_fd < 0) {
        if (mkdir(cfg->capture_dir, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create capture directory %s: %s", cfg->capture_dir,
                     strerror(errno));
            return -1;
        }
        d->cap_dir_fd = open(cfg->capture_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d->cap_dir_fd < 0) {
            snprintf(err, errlen, "cannot open capture directory %s: %s", cfg->capture_dir,
                     strerror(errno));
            return -1;
        }
    }
    struct slot *slots = calloc(cfg->n_upstreams ? cfg->n_upstreams : 1, sizeof *slots);
    if (!slots) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const struct config_upstream *u = &cfg->upstreams[i];
        snprintf(slots[i].name, sizeof slots[i].name, "%s", u->name);
        slots[i].capture = u->capture;
        if (u->capture)
            continue;
        slots[i].up = upstream_new(d->r, u, slots[i].setup_error, sizeof slots[i].setup_error);
        if (!slots[i].up)
            log_event(LOG_ERROR, "upstream.setup_failed", "upstream", "%s", u->name, "error", "%s",
                      slots[i].setup_error, NULL);
    }
    slots_clear(d);
    d->slots = slots;
    d->n_slots = cfg->n_upstreams;
    return 0;
}

void deliver_free(struct deliver *d)
{
    if (!d)
        return;
    /* the loop has stopped: no QUIT could finish, no callback may run */
    for (size_t i = 0; i < d->n_slots; i++)
        upstream_free(d->slots[i].up);
    free(d->slots);
    while (d->attempts)
        attempt_free(d->attempts);
    if (d->cap_dir_fd >= 0)
        close(d->cap_dir_fd);
    free(d);
}

int deliver_start(struct deliver *d, const struct spool_msg *m, deliver_done_fn done, void *arg)
{
    if (d->n_slots && d->slots[0].capture) {
        const struct config_upstream *u = config_upstream_find(d->r->cfg, d->slots[0].name);
        if (u)
            return capture_submit(d, u, m, done, arg);
    }
    return smtp_start(d, m, done, arg);
}

void deliver_foreach_upstream(struct deliver *d,
                              void (*fn)(void *arg, const char *name, const char *health,
                                         const char *last_error, int conns, size_t queued),
                              void *arg)
{
    static const char *const names[] = {"healthy", "down", "probing"};
    for (size_t i = 0; i < d->n_slots; i++) {
        struct slot *sl = &d->slots[i];
        if (sl->capture) {
            fn(arg, sl->name, "capture", "", 0, 0);
        } else if (!sl->up) {
            fn(arg, sl->name, "unusable", sl->setup_error, 0, 0);
        } else {
            int conns, connecting;
            size_t queued;
            upstream_pool_stats(sl->up, &conns, &connecting, &queued);
            fn(arg, sl->name, names[upstream_health(sl->up)], upstream_last_error(sl->up), conns,
               queued);
        }
    }
}
