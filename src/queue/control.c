/* The control socket: one request line in (queue/control_request.h), one
 * JSON document out. Listings are streamed a bounded chunk per event-loop
 * turn, driven by the write callback, so a large queue neither stalls SMTP
 * sessions nor is ever held in memory as one document. */
#include "queue/control.h"

#include "core/config.h"
#include "core/events.h"
#include "core/log.h"
#include "core/relay.h"
#include "deliver/deliver.h"
#include "queue/control_request.h"
#include "queue/queue.h"
#include "queue/transfer.h"
#include "spool/spool.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Ids selected per scan of the spool: the memory a listing holds besides
 * its output buffer, and (with the index size) the work of one scan. */
#define LIST_BATCH 1024
/* Messages formatted per write callback; the output is refilled when it
 * drains to LIST_LOW_WATER, so at most about LIST_CHUNK messages of text
 * wait in memory per connection however slowly the client reads. */
#define LIST_CHUNK 64
#define LIST_LOW_WATER 16384
/* A listing that emitted this many messages allocated enough that giving
 * freed memory back to the kernel is worth a malloc_trim. */
#define LIST_TRIM_AFTER 20000

struct control {
    struct relay *r;
    struct evconnlistener *l;
    char path[108];
};

/* One client connection; a listing keeps its cursor here between turns. */
struct control_conn {
    struct control *c;
    struct bufferevent *bev;
    bool listing;
    int state;       /* CONTROL_STATE_ANY or enum spool_msg_state */
    uint64_t cursor; /* the last id emitted (or the request's after=) */
    uint64_t left;   /* messages still to emit; UINT64_MAX: no limit */
    uint64_t *batch; /* ids after cursor, ascending */
    size_t n_batch, pos;
    bool more; /* ids beyond the batch exist */
    uint64_t emitted;
    bool importing; /* an import runs; its completion answers */
    bool gone;      /* the client left during the import */
};

static const char *state_name(enum spool_msg_state s)
{
    return s == SPOOL_MSG_ACTIVE ? "active" : s == SPOOL_MSG_HELD ? "held" : "dead";
}

static json_t *msg_json(const struct spool_msg *m, bool full)
{
    char ids[17];
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(spool_id_str(m->id, ids)));
    json_object_set_new(o, "state", json_string(state_name(m->state)));
    json_object_set_new(o, "sender", json_string(m->sender));
    json_t *rc = json_array();
    for (uint32_t i = 0; i < m->n_rcpts; i++) {
        json_t *x = json_object();
        json_object_set_new(x, "address", json_string(m->rcpts[i]));
        static const char *const st[] = {"pending", "delivered", "failed"};
        json_object_set_new(x, "state", json_string(st[m->rcpt_state[i] % 3]));
        json_array_append_new(rc, x);
    }
    json_object_set_new(o, "recipients", rc);
    json_object_set_new(o, "size", json_integer(m->data_len));
    json_object_set_new(o, "received", json_integer(m->received));
    json_object_set_new(o, "attempts", json_integer(m->attempts));
    json_object_set_new(o, "next_attempt", json_integer(m->next_attempt));
    json_object_set_new(o, "last_reply", m->last_reply ? json_string(m->last_reply) : json_null());
    const char *up = queue_upstream_reply(m->last_reply);
    json_object_set_new(o, "upstream_reply", up ? json_string(up) : json_null());
    json_object_set_new(o, "bounce", json_boolean(m->flags & SPOOL_F_BOUNCE));
    if (full && m->meta)
        json_object_set_new(o, "meta", spool_meta_json(m->meta));
    return o;
}

static void upstream_json(void *arg, const char *name, const char *health, const char *last_error,
                          int conns, size_t queued)
{
    json_array_append_new(arg, json_pack("{s:s,s:s,s:s,s:i,s:I}", "name", name, "health", health,
                                         "last_error", last_error, "connections", conns, "queued",
                                         (json_int_t)queued));
}

static char *error_reply(const char *msg)
{
    json_t *o = json_pack("{s:b,s:s}", "ok", 0, "error", msg);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static char *ok_reply(json_t *data)
{
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_true());
    if (data)
        json_object_set_new(o, "data", data);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static json_t *stats_json(struct relay *r)
{
    struct spool_stats st;
    spool_get_stats(r->spool, &st);
    json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "messages",
                          (json_int_t)st.messages, "active", (json_int_t)st.active, "held",
                          (json_int_t)st.held, "dead", (json_int_t)st.dead, "segments",
                          (json_int_t)st.segments, "spool_bytes", (json_int_t)st.bytes, "commits",
                          (json_int_t)st.commits, "accepted", (json_int_t)r->n.accepted, "rejected",
                          (json_int_t)r->n.rejected, "delivered", (json_int_t)r->n.delivered,
                          "deferred", (json_int_t)r->n.deferred, "failed", (json_int_t)r->n.failed,
                          "bounces", (json_int_t)r->n.bounces);
    json_object_set_new(o, "oldest_received", json_integer(st.oldest_received));
    json_object_set_new(o, "sessions", json_integer(r->sessions));
    json_object_set_new(o, "inflight", json_integer((json_int_t)queue_inflight(r->queue)));
    json_t *ups = json_array();
    deliver_foreach_upstream(r->deliver, upstream_json, ups);
    json_object_set_new(o, "upstreams", ups);
    return o;
}

/* Answers every request but list, which control_conn streams. */
static char *answer(struct relay *r, const struct control_request *q, const char *line)
{
    int rc;
    char ids[17];
    switch (q->verb) {
    case CONTROL_FLUSH:
        queue_flush(r->queue);
        return ok_reply(NULL);
    case CONTROL_STATS:
        return ok_reply(stats_json(r));
    case CONTROL_SHOW: {
        const struct spool_msg *m = spool_get(r->spool, q->id);
        return m ? ok_reply(msg_json(m, true)) : error_reply("no such message");
    }
    case CONTROL_RETRY:
    case CONTROL_RELEASE:
        if (q->all) {
            size_t n = q->verb == CONTROL_RETRY ? queue_retry_all(r->queue, q->dead)
                                                : queue_release_all(r->queue);
            events_admin(r, q->verb == CONTROL_RETRY ? "queue.retry_all" : "queue.release_all",
                         q->dead ? "dead too" : "");
            return ok_reply(json_pack("{s:I}", "messages", (json_int_t)n));
        }
        rc = q->verb == CONTROL_RETRY ? queue_retry(r->queue, q->id)
                                      : queue_release(r->queue, q->id);
        break;
    case CONTROL_HOLD:
        rc = queue_hold(r->queue, q->id);
        break;
    case CONTROL_DELETE:
        rc = queue_delete(r->queue, q->id);
        break;
    default:
        return error_reply("this request is answered as a stream");
    }
    if (rc == -ENOENT)
        return error_reply("no such message");
    if (rc == -EINVAL)
        return error_reply("the message is not in a state that allows this");
    if (rc < 0)
        return error_reply(strerror(-rc));
    char action[48];
    snprintf(action, sizeof action, "queue.%.*s", (int)strcspn(line, " "), line);
    events_admin(r, action, spool_id_str(q->id, ids));
    return ok_reply(NULL);
}

char *control_handle(struct relay *r, const char *line)
{
    struct control_request q;
    const char *err;
    if (control_request_parse(line, strlen(line), &q, &err) < 0)
        return error_reply(err);
    if (q.verb == CONTROL_LIST)
        return error_reply("list is answered as a stream");
    return answer(r, &q, line);
}

/* ---- streamed listings ---- */

/* Selection of the smallest matching ids above a cursor: a max-heap of at
 * most cap ids, so one scan costs O(n log cap) and cap words of memory. */
struct select_ctx {
    uint64_t after;
    int state;
    uint64_t *heap;
    size_t n, cap;
    bool overflow; /* a match was dropped: more ids exist beyond the heap */
};

static void heap_sift_down(uint64_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && h[c + 1] > h[c])
            c++;
        if (h[i] >= h[c])
            return;
        uint64_t t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

static void select_one(void *arg, const struct spool_msg *m)
{
    struct select_ctx *c = arg;
    if (m->id <= c->after || (c->state != CONTROL_STATE_ANY && (int)m->state != c->state))
        return;
    if (c->n < c->cap) {
        size_t i = c->n++;
        c->heap[i] = m->id;
        while (i > 0 && c->heap[(i - 1) / 2] < c->heap[i]) {
            uint64_t t = c->heap[i];
            c->heap[i] = c->heap[(i - 1) / 2];
            c->heap[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
        return;
    }
    c->overflow = true;
    if (m->id < c->heap[0]) {
        c->heap[0] = m->id;
        heap_sift_down(c->heap, c->n, 0);
    }
}

/* Fills cc->batch with the next ids after the cursor, ascending. */
static void select_batch(struct control_conn *cc)
{
    uint64_t want = cc->left < LIST_BATCH ? cc->left : LIST_BATCH;
    struct select_ctx s = {cc->cursor, cc->state, cc->batch, 0, (size_t)want, false};
    spool_foreach(cc->c->r->spool, select_one, &s);
    /* heap sort in place: the max goes to the end each round */
    for (size_t n = s.n; n > 1; n--) {
        uint64_t t = s.heap[0];
        s.heap[0] = s.heap[n - 1];
        s.heap[n - 1] = t;
        heap_sift_down(s.heap, n - 1, 0);
    }
    cc->n_batch = s.n;
    cc->pos = 0;
    cc->more = s.overflow;
}

static void conn_free(struct control_conn *cc)
{
    bool trim = cc->emitted >= LIST_TRIM_AFTER;
    bufferevent_free(cc->bev);
    free(cc->batch);
    free(cc);
    if (trim)
        malloc_trim(0);
}

/* The tail names the cursor for the next page: null when nothing is left. */
static void list_finish(struct control_conn *cc)
{
    struct evbuffer *out = bufferevent_get_output(cc->bev);
    char ids[17];
    bool more = cc->left == 0 && (cc->more || cc->pos < cc->n_batch);
    if (more)
        evbuffer_add_printf(out, "],\"next\":\"%s\"", spool_id_str(cc->cursor, ids));
    else
        evbuffer_add_printf(out, "],\"next\":null");
    evbuffer_add_printf(out, ",\"count\":%llu}\n", (unsigned long long)cc->emitted);
    cc->listing = false;
    /* the connection closes once everything is written */
    bufferevent_setwatermark(cc->bev, EV_WRITE, 0, 0);
}

/* One turn's worth of a listing: at most LIST_CHUNK messages. Each message
 * is one line, so a client can read the stream line by line. */
static void list_chunk(struct control_conn *cc)
{
    struct evbuffer *out = bufferevent_get_output(cc->bev);
    struct spool *sp = cc->c->r->spool;
    for (int k = 0; k < LIST_CHUNK && cc->left > 0; k++) {
        if (cc->pos == cc->n_batch) {
            if (cc->n_batch && !cc->more)
                break;
            select_batch(cc);
            if (cc->n_batch == 0)
                break;
        }
        uint64_t id = cc->batch[cc->pos++];
        const struct spool_msg *m = spool_get(sp, id);
        if (!m)
            continue; /* finished or deleted since the scan */
        json_t *o = msg_json(m, false);
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!s)
            continue;
        evbuffer_add_printf(out, "%s%s\n", cc->emitted ? "," : "", s);
        free(s);
        cc->cursor = id;
        cc->emitted++;
        if (cc->left != UINT64_MAX)
            cc->left--;
    }
    bool exhausted = cc->pos == cc->n_batch && (cc->n_batch == 0 || !cc->more);
    if (cc->left == 0 || exhausted)
        list_finish(cc);
}

static void list_start(struct control_conn *cc, const struct control_request *q)
{
    cc->batch = malloc(LIST_BATCH * sizeof *cc->batch);
    if (!cc->batch) {
        char *e = error_reply("out of memory");
        evbuffer_add_printf(bufferevent_get_output(cc->bev), "%s\n", e);
        free(e);
        return;
    }
    cc->listing = true;
    cc->state = q->state;
    cc->cursor = q->after;
    cc->left = q->limit ? q->limit : UINT64_MAX;
    evbuffer_add_printf(bufferevent_get_output(cc->bev), "{\"ok\":true,\"data\":[\n");
    bufferevent_setwatermark(cc->bev, EV_WRITE, LIST_LOW_WATER, 0);
    list_chunk(cc);
}

static void on_import_done(void *arg, const struct transfer_result *res)
{
    struct control_conn *cc = arg;
    cc->importing = false;
    char detail[600];
    snprintf(detail, sizeof detail, "%zu imported, %zu skipped%s%s", res->imported, res->skipped,
             res->error[0] ? "; " : "", res->error);
    events_admin(cc->c->r, "queue.import", detail);
    if (cc->gone) {
        conn_free(cc);
        return;
    }
    json_t *data = json_pack("{s:I,s:I}", "imported", (json_int_t)res->imported, "skipped",
                             (json_int_t)res->skipped);
    json_t *o = json_pack("{s:b,s:o}", "ok", !res->error[0], "data", data);
    if (res->error[0])
        json_object_set_new(o, "error", json_string(res->error));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    evbuffer_add_printf(bufferevent_get_output(cc->bev), "%s\n", s ? s : "{\"ok\":false}");
    free(s);
}

/* The import answers when every message it added is durable, however long
 * that takes: no timeout while it runs. */
static char *import_start(struct control_conn *cc, const char *line,
                          const struct control_request *q)
{
    char path[CONTROL_PATH_MAX + 1], err[512];
    snprintf(path, sizeof path, "%.*s", (int)q->path_len, line + q->path_off);
    bufferevent_set_timeouts(cc->bev, NULL, NULL);
    cc->importing = true;
    if (transfer_import(cc->c->r->spool, cc->c->r->queue, path, on_import_done, cc, err,
                        sizeof err) < 0) {
        cc->importing = false;
        return error_reply(err);
    }
    return NULL;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct control_conn *cc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    if (!line) {
        if (evbuffer_get_length(in) > 4096)
            conn_free(cc);
        return;
    }
    bufferevent_disable(bev, EV_READ); /* one request per connection */
    struct control_request q;
    const char *err;
    char *resp;
    if (control_request_parse(line, n, &q, &err) < 0) {
        resp = error_reply(err);
    } else if (q.verb == CONTROL_LIST) {
        free(line);
        list_start(cc, &q);
        return;
    } else if (q.verb == CONTROL_IMPORT) {
        resp = import_start(cc, line, &q);
        free(line);
        if (!resp)
            return; /* on_import_done answers */
        evbuffer_add_printf(bufferevent_get_output(bev), "%s\n", resp);
        free(resp);
        return;
    } else {
        resp = answer(cc->c->r, &q, line);
    }
    free(line);
    evbuffer_add_printf(bufferevent_get_output(bev), "%s\n", resp);
    free(resp);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct control_conn *cc = arg;
    if (cc->importing)
        return;
    if (cc->listing) {
        list_chunk(cc);
        return;
    }
    if (!(bufferevent_get_enabled(bev) & EV_READ) &&
        evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(cc);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct control_conn *cc = arg;
    (void)what;
    if (cc->importing) { /* the import goes on; its completion frees cc */
        cc->gone = true;
        bufferevent_disable(bev, EV_READ | EV_WRITE);
        return;
    }
    conn_free(cc);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct control *c = arg;
    (void)l;
    (void)sa;
    (void)len;
    struct control_conn *cc = calloc(1, sizeof *cc);
    struct bufferevent *bev =
        cc ? bufferevent_socket_new(c->r->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        free(cc);
        evutil_closesocket(fd);
        return;
    }
    cc->c = c;
    cc->bev = bev;
    bufferevent_setcb(bev, on_read, on_write, on_event, cc);
    struct timeval tv = {10, 0};
    bufferevent_set_timeouts(bev, &tv, &tv);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

struct control *control_open(struct relay *r, char *err, size_t errlen)
{
    struct control *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->r = r;
    const char *path = r->cfg->control_socket;
    if (strlen(path) >= sizeof c->path) {
        snprintf(err, errlen, "control socket path too long: %s", path);
        free(c);
        return NULL;
    }
    snprintf(c->path, sizeof c->path, "%s", path);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    unlink(path);
    mode_t old = umask(0177); /* the socket is born 0600 */
    c->l = evconnlistener_new_bind(r->base, on_accept, c,
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
                                   (struct sockaddr *)&sun, sizeof sun);
    umask(old);
    if (!c->l) {
        snprintf(err, errlen, "cannot listen on control socket %s: %s", path, strerror(errno));
        free(c);
        return NULL;
    }
    return c;
}

void control_stop(struct control *c)
{
    if (c && c->l) {
        evconnlistener_free(c->l);
        c->l = NULL;
        unlink(c->path);
    }
}

void control_free(struct control *c)
{
    if (!c)
        return;
    control_stop(c);
    free(c);
}
