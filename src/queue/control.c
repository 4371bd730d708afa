/* Control requests: list, show, retry, hold, release, delete, dead, flush,
 * stats. Requests are words separated by spaces; replies are JSON objects
 * with "ok" and either the data or an "error". */
#include "queue/control.h"

#include "core/config.h"
#include "core/events.h"
#include "core/log.h"
#include "core/relay.h"
#include "deliver/deliver.h"
#include "queue/queue.h"
#include "spool/spool.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct control {
    struct relay *r;
    struct evconnlistener *l;
    char path[108];
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
    json_object_set_new(o, "bounce", json_boolean(m->flags & SPOOL_F_BOUNCE));
    if (full && m->meta)
        json_object_set_new(o, "meta", spool_meta_json(m->meta));
    return o;
}

struct list_ctx {
    json_t *arr;
    int state; /* -1 any */
};

static void list_one(void *arg, const struct spool_msg *m)
{
    struct list_ctx *c = arg;
    if (c->state < 0 || (int)m->state == c->state)
        json_array_append_new(c->arr, msg_json(m, false));
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

char *control_handle(struct relay *r, const char *line)
{
    char verb[32] = "", arg[64] = "";
    if (sscanf(line, "%31s %63s", verb, arg) < 1)
        return error_reply("empty request");
    if (strcmp(verb, "list") == 0 || strcmp(verb, "dead") == 0) {
        struct list_ctx c = {json_array(), -1};
        const char *st = strcmp(verb, "dead") == 0 ? "dead" : arg;
        if (strcmp(st, "active") == 0)
            c.state = SPOOL_MSG_ACTIVE;
        else if (strcmp(st, "held") == 0)
            c.state = SPOOL_MSG_HELD;
        else if (strcmp(st, "dead") == 0)
            c.state = SPOOL_MSG_DEAD;
        else if (*st && strcmp(st, "all") != 0) {
            json_decref(c.arr);
            return error_reply("unknown state; use active, held, dead or all");
        }
        spool_foreach(r->spool, list_one, &c);
        return ok_reply(c.arr);
    }
    if (strcmp(verb, "flush") == 0) {
        queue_flush(r->queue);
        return ok_reply(NULL);
    }
    if (strcmp(verb, "stats") == 0) {
        struct spool_stats st;
        spool_get_stats(r->spool, &st);
        json_t *o = json_pack(
            "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "messages",
            (json_int_t)st.messages, "active", (json_int_t)st.active, "held", (json_int_t)st.held,
            "dead", (json_int_t)st.dead, "segments", (json_int_t)st.segments, "spool_bytes",
            (json_int_t)st.bytes, "commits", (json_int_t)st.commits, "accepted",
            (json_int_t)r->n.accepted, "rejected", (json_int_t)r->n.rejected, "delivered",
            (json_int_t)r->n.delivered, "deferred", (json_int_t)r->n.deferred, "failed",
            (json_int_t)r->n.failed, "bounces", (json_int_t)r->n.bounces);
        json_object_set_new(o, "oldest_received", json_integer(st.oldest_received));
        json_object_set_new(o, "sessions", json_integer(r->sessions));
        json_object_set_new(o, "inflight", json_integer((json_int_t)queue_inflight(r->queue)));
        json_t *ups = json_array();
        deliver_foreach_upstream(r->deliver, upstream_json, ups);
        json_object_set_new(o, "upstreams", ups);
        return ok_reply(o);
    }
    if (strcmp(verb, "retry") == 0 && strcmp(arg, "--all") == 0) {
        queue_retry_all(r->queue);
        return ok_reply(NULL);
    }
    uint64_t id;
    if (!*arg)
        return error_reply("this request needs a message id");
    if (spool_id_parse(arg, &id) < 0)
        return error_reply("bad message id (expected 16 hex digits)");
    int rc;
    if (strcmp(verb, "show") == 0) {
        const struct spool_msg *m = spool_get(r->spool, id);
        return m ? ok_reply(msg_json(m, true)) : error_reply("no such message");
    } else if (strcmp(verb, "retry") == 0) {
        rc = queue_retry(r->queue, id);
    } else if (strcmp(verb, "hold") == 0) {
        rc = queue_hold(r->queue, id);
    } else if (strcmp(verb, "release") == 0) {
        rc = queue_release(r->queue, id);
    } else if (strcmp(verb, "delete") == 0) {
        rc = queue_delete(r->queue, id);
    } else {
        return error_reply("unknown request; use list, show, retry, hold, release, delete, "
                           "dead, flush or stats");
    }
    if (rc == -ENOENT)
        return error_reply("no such message");
    if (rc == -EINVAL)
        return error_reply("the message is not in a state that allows this");
    if (rc < 0)
        return error_reply(strerror(-rc));
    char action[48];
    snprintf(action, sizeof action, "queue.%s", verb);
    events_admin(r, action, arg);
    return ok_reply(NULL);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct control *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    if (!line) {
        if (evbuffer_get_length(in) > 4096)
            bufferevent_free(bev);
        return;
    }
    char *resp = control_handle(c->r, line);
    free(line);
    evbuffer_add(bufferevent_get_output(bev), resp, strlen(resp));
    evbuffer_add(bufferevent_get_output(bev), "\n", 1);
    free(resp);
    bufferevent_disable(bev, EV_READ);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    if (!(bufferevent_get_enabled(bev) & EV_READ))
        bufferevent_free(bev);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what;
    (void)arg;
    bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct control *c = arg;
    (void)l;
    (void)sa;
    (void)len;
    struct bufferevent *bev = bufferevent_socket_new(c->r->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
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
    mode_t old = umask(077); /* the socket is born 0600 */
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
