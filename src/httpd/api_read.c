/* The routes that read what happened to mail, and the re-drive of a dead
 * letter: the spool says where a queued message stands, the event ring
 * says what happened to it lately, api.db says who sent it. A credential
 * with the read scope sees its own messages; admin sees every one. */
#include "core/relay.h"
#include "httpd/api_events.h"
#include "httpd/api_int.h"
#include "policy/creds.h"
#include "queue/queue.h"
#include "spool/spool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API_EVENTS_PAGE 100
#define API_EVENTS_PAGE_MAX 1000

static bool is_admin(const struct api_call *c)
{
    return c->cred->scopes & CRED_SCOPE_ADMIN;
}

static json_t *event_json(const struct api_event *ev)
{
    json_t *o = json_pack("{s:I, s:I, s:s, s:s}", "seq", (json_int_t)ev->seq, "at",
                          (json_int_t)ev->at, "type", ev->type, "id", ev->id);
    if (ev->rcpt)
        json_object_set_new(o, "recipient", json_string(ev->rcpt));
    if (ev->upstream)
        json_object_set_new(o, "upstream", json_string(ev->upstream));
    if (ev->reply)
        json_object_set_new(o, "reply", json_string(ev->reply));
    if (ev->cred)
        json_object_set_new(o, "credential", json_string(ev->cred));
    return o;
}

static void collect(void *arg, const struct api_event *ev)
{
    json_array_append_new(arg, event_json(ev));
}

/* The sender of a message: api.db for API mail, the spool's auth= for the
 * rest. *owner is allocated, NULL when unknown. */
static char *owner_of(struct api_call *c, const char *id, const struct spool_msg *m, char **tags,
                      char **meta)
{
    char *cred = NULL;
    *tags = *meta = NULL;
    if (api_store_message_get(c->s->store, id, &cred, tags, meta) == 0)
        return cred;
    char buf[CRED_NAME_MAX + 1];
    if (m && m->meta && spool_meta_get(m->meta, "auth", buf, sizeof buf) == 0)
        return strdup(buf);
    return NULL;
}

static const char *msg_state(const struct spool_msg *m)
{
    return m->state == SPOOL_MSG_HELD ? "held" : m->state == SPOOL_MSG_DEAD ? "dead" : "queued";
}

static void message_route(struct api_call *c)
{
    struct relay *r = c->s->r;
    uint64_t id;
    char ids[17];
    if (spool_id_parse(c->path_id, &id) < 0) {
        api_fail(c, 404, "not_found", "no such message", NULL, 0);
        return;
    }
    spool_id_str(id, ids);
    const struct spool_msg *m = r->spool ? spool_get(r->spool, id) : NULL;
    char *tags, *meta;
    char *owner = owner_of(c, ids, m, &tags, &meta);
    json_t *events = json_array();
    api_events_each(c->s->events, 0, (size_t)-1, NULL, ids, collect, events);
    for (size_t i = 0; !owner && i < json_array_size(events); i++) {
        /* a message that left the queue: its events still name the sender */
        const char *ec =
            json_string_value(json_object_get(json_array_get(events, i), "credential"));
        if (ec)
            owner = strdup(ec);
    }
    bool known = m || owner || json_array_size(events);
    bool allowed = is_admin(c) || (owner && strcmp(owner, c->cred->name) == 0);
    if (!known || !allowed) {
        /* another credential's message reads as unknown: ids are not secrets */
        free(owner);
        free(tags);
        free(meta);
        json_decref(events);
        api_fail(c, 404, "not_found", "no such message", NULL, 0);
        return;
    }
    json_t *o = json_pack("{s:s}", "id", ids);
    if (owner)
        json_object_set_new(o, "credential", json_string(owner));
    if (tags)
        json_object_set_new(o, "tags", json_loads(tags, 0, NULL));
    if (meta)
        json_object_set_new(o, "metadata", json_loads(meta, 0, NULL));
    if (m) {
        static const char *const rs[] = {"pending", "delivered", "failed"};
        json_t *rc = json_array();
        for (uint32_t i = 0; i < m->n_rcpts; i++)
            json_array_append_new(
                rc, json_pack("{s:s, s:s}", "to", m->rcpts[i], "state", rs[m->rcpt_state[i] % 3]));
        json_object_set_new(o, "state", json_string(msg_state(m)));
        json_object_set_new(o, "sender", json_string(m->sender));
        json_object_set_new(o, "recipients", rc);
        json_object_set_new(o, "received", json_integer(m->received));
        json_object_set_new(o, "attempts", json_integer(m->attempts));
        json_object_set_new(o, "next_attempt", json_integer(m->next_attempt));
        json_object_set_new(o, "last_reply",
                            m->last_reply ? json_string(m->last_reply) : json_null());
    } else {
        /* no longer in the queue: every recipient was delivered or failed */
        json_object_set_new(o, "state", json_string("done"));
    }
    json_object_set_new(o, "events", events);
    free(owner);
    free(tags);
    free(meta);
    api_answer(c, 200, o, 0);
}

static bool query_u64(const char *q, const char *name, uint64_t *out)
{
    size_t n = strlen(name);
    for (const char *p = q ? q : ""; *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(p + n + 1, &end, 10);
            if (errno || end == p + n + 1 || (*end && *end != '&'))
                return false;
            *out = v;
            return true;
        }
        const char *amp = strchr(p, '&');
        if (!amp)
            break;
        p = amp + 1;
    }
    return true;
}

static void events_route(struct api_call *c)
{
    uint64_t since = 0, limit = API_EVENTS_PAGE;
    if (!query_u64(c->query, "since", &since) || !query_u64(c->query, "limit", &limit) ||
        limit == 0 || limit > API_EVENTS_PAGE_MAX) {
        api_fail(c, 400, "invalid_query", "since and limit (1-1000) are integers", NULL, 0);
        return;
    }
    json_t *list = json_array();
    uint64_t next = api_events_each(c->s->events, since, (size_t)limit,
                                    is_admin(c) ? NULL : c->cred->name, NULL, collect, list);
    uint64_t oldest = api_events_oldest(c->s->events);
    json_t *o = json_pack("{s:o, s:I, s:b}", "events", list, "next", (json_int_t)next, "truncated",
                          since && oldest && since + 1 < oldest);
    api_answer(c, 200, o, 0);
}

/* ---- the queue, for one credential or (admin) all ---- */

struct list_ctx {
    struct api_call *c;
    const char *state; /* "queued", "held", "dead" or NULL for all */
    json_t *out;
    size_t limit, total;
};

static void list_one(void *arg, const struct spool_msg *m)
{
    struct list_ctx *l = arg;
    const char *st = msg_state(m);
    if (l->state && strcmp(st, l->state) != 0)
        return;
    char ids[17], owner[CRED_NAME_MAX + 1] = "";
    spool_id_str(m->id, ids);
    if (m->meta)
        spool_meta_get(m->meta, "auth", owner, sizeof owner);
    if (!is_admin(l->c) && strcmp(owner, l->c->cred->name) != 0)
        return;
    l->total++;
    if (json_array_size(l->out) >= l->limit)
        return;
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "id", ids, "state", st, "sender",
                          m->sender ? m->sender : "", "recipients", (json_int_t)m->n_rcpts,
                          "received", (json_int_t)m->received, "attempts", (json_int_t)m->attempts,
                          "next_attempt", (json_int_t)m->next_attempt);
    if (owner[0])
        json_object_set_new(o, "credential", json_string(owner));
    json_object_set_new(o, "last_reply", m->last_reply ? json_string(m->last_reply) : json_null());
    json_array_append_new(l->out, o);
}

static void list_route(struct api_call *c)
{
    uint64_t limit = API_EVENTS_PAGE;
    char state[16] = "";
    const char *q = c->query ? strstr(c->query, "state=") : NULL;
    if (q && (q == c->query || q[-1] == '&')) {
        size_t n = strcspn(q + 6, "&");
        if (n < sizeof state) {
            memcpy(state, q + 6, n);
            state[n] = '\0';
        }
        if (strcmp(state, "queued") != 0 && strcmp(state, "held") != 0 &&
            strcmp(state, "dead") != 0) {
            api_fail(c, 400, "invalid_query", "state is queued, held or dead", NULL, 0);
            return;
        }
    }
    if (!query_u64(c->query, "limit", &limit) || limit == 0 || limit > API_EVENTS_PAGE_MAX) {
        api_fail(c, 400, "invalid_query", "limit is an integer from 1 to 1000", NULL, 0);
        return;
    }
    struct list_ctx l = {c, state[0] ? state : NULL, json_array(), (size_t)limit, 0};
    if (c->s->r->spool)
        spool_foreach(c->s->r->spool, list_one, &l);
    json_t *o = json_pack("{s:o, s:I, s:b}", "messages", l.out, "total", (json_int_t)l.total,
                          "truncated", l.total > json_array_size(l.out));
    api_answer(c, 200, o, 0);
}

static void retry_route(struct api_call *c)
{
    struct relay *r = c->s->r;
    uint64_t id;
    if (spool_id_parse(c->path_id, &id) < 0 || !r->queue) {
        api_fail(c, 404, "not_found", "no such message", NULL, 0);
        return;
    }
    int rc = queue_retry(r->queue, id);
    if (rc == -ENOENT) {
        api_fail(c, 404, "not_found", "no such message in the queue", NULL, 0);
        return;
    }
    if (rc < 0) {
        api_fail(c, 409, "not_retryable", "the message cannot be retried now", NULL, 0);
        return;
    }
    char ids[17], detail[96];
    spool_id_str(id, ids);
    snprintf(detail, sizeof detail, "%s by %s (api)", ids, c->cred->name);
    events_admin(r, "queue.retry", detail);
    api_events_add(c->s->events, time(NULL), "retry", ids, NULL, NULL, NULL, c->cred->name);
    api_answer(c, 202, json_pack("{s:s, s:s}", "id", ids, "state", "queued"), 0);
}

void api_read_route(struct api_call *c)
{
    if (c->route == ROUTE_MESSAGE)
        message_route(c);
    else if (c->route == ROUTE_LIST)
        list_route(c);
    else if (c->route == ROUTE_EVENTS)
        events_route(c);
    else
        retry_route(c);
}

/* ---- the observer: forwards every event, keeps delivery events ---- */

static void ob_auth(struct relay *r, const char *ip, const char *method, const char *cred, bool ok,
                    const char *reason)
{
    const struct events_observer *p = r->api->prev;
    if (p && p->auth)
        p->auth(r, ip, method, cred, ok, reason);
}

static void ob_reject(struct relay *r, const char *ip, const char *cred, enum reject_reason why,
                      const char *reply)
{
    const struct events_observer *p = r->api->prev;
    if (p && p->reject)
        p->reject(r, ip, cred, why, reply);
}

static void ob_security(struct relay *r, const char *ip, const char *what, const char *detail)
{
    const struct events_observer *p = r->api->prev;
    if (p && p->security)
        p->security(r, ip, what, detail);
}

static void ob_accepted(struct relay *r, const char *queue_id, const char *message_id,
                        const char *client_ip, const char *cred, const char *sender,
                        const char *const *rcpts, size_t n_rcpts, size_t size, const char *tls,
                        const char *const *atts, size_t n_atts)
{
    const struct events_observer *p = r->api->prev;
    if (p && p->accepted)
        p->accepted(r, queue_id, message_id, client_ip, cred, sender, rcpts, n_rcpts, size, tls,
                    atts, n_atts);
    for (size_t i = 0; i < n_rcpts; i++)
        api_events_add(r->api->events, time(NULL), "queued", queue_id, rcpts[i], cred, NULL, NULL);
}

static void ob_delivery(struct relay *r, const struct spool_msg *m, uint32_t rcpt,
                        const char *state, const char *upstream, const char *reply, double dur)
{
    const struct events_observer *p = r->api->prev;
    if (p && p->delivery)
        p->delivery(r, m, rcpt, state, upstream, reply, dur);
    char ids[17], cred[CRED_NAME_MAX + 1];
    spool_id_str(m->id, ids);
    bool has_cred = m->meta && spool_meta_get(m->meta, "auth", cred, sizeof cred) == 0;
    /* "failed" for a recipient is a bounce to the API's readers */
    api_events_add(r->api->events, time(NULL), strcmp(state, "failed") == 0 ? "bounced" : state,
                   ids, rcpt < m->n_rcpts ? m->rcpts[rcpt] : NULL, has_cred ? cred : NULL, upstream,
                   reply);
}

static void ob_admin(struct relay *r, const char *action, const char *detail)
{
    const struct events_observer *p = r->api->prev;
    if (p && p->admin)
        p->admin(r, action, detail);
}

void api_observe_install(struct api_server *s)
{
    s->prev = s->r->observer;
    s->chain = (struct events_observer){ob_auth,     ob_reject,   ob_security,
                                        ob_accepted, ob_delivery, ob_admin};
    s->r->observer = &s->chain;
}

void api_observe_remove(struct api_server *s)
{
    if (s->r->observer == &s->chain)
        s->r->observer = s->prev;
}
