/* The submission routes: the request becomes one or more messages, each
 * goes through the intake transaction (intake/submit.h) like an SMTP
 * message, and the answer is sent once the spool has decided about every
 * one: 202 only for a message that is durable. */
#include "core/config.h"
#include "core/relay.h"
#include "httpd/api_int.h"
#include "httpd/api_status.h"
#include "intake/submit.h"
#include "mail/address.h"
#include "mail/compose.h"
#include "policy/creds.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* A send_at this close to now is sent now; later ones are refused (the
 * queue has no delayed start yet). */
#define API_SEND_AT_SLACK 60

struct api_sub {
    struct api_call *c;
    size_t index;
    struct submit_tx *tx;
    char **rcpts;
    size_t n_rcpts;
    char *tags, *metadata; /* JSON texts or NULL */
};

static void sub_free(struct api_sub *s)
{
    if (s->tx)
        submit_free(s->tx);
    for (size_t i = 0; i < s->n_rcpts; i++)
        free(s->rcpts[i]);
    free(s->rcpts);
    free(s->tags);
    free(s->metadata);
    free(s);
}

static void set_result(struct api_call *c, size_t index, int status, json_t *body, int retry_after)
{
    json_t *r = json_pack("{s:i, s:o}", "status", status, "body", body ? body : json_object());
    if (r && retry_after)
        json_object_set_new(r, "retry_after", json_integer(retry_after));
    json_array_set_new(c->results, index, r ? r : json_object());
}

static void set_error(struct api_call *c, size_t index, int status, const char *code,
                      const char *message, const char *rule, int retry_after)
{
    set_result(c, index, status, api_error_json(code, message, rule), retry_after);
}

static void set_refusal(struct api_call *c, size_t index, const struct authz_refusal *ref)
{
    struct api_status st;
    api_status_from_refusal(ref, &st);
    json_t *body = api_error_json(st.code, ref->reply, st.rule);
    json_object_set_new(json_object_get(body, "error"), "smtp_reply", json_string(ref->reply));
    set_result(c, index, st.status, body, st.retry_after);
}

static int result_status(const json_t *r)
{
    return (int)json_integer_value(json_object_get(r, "status"));
}

static void iso_time(time_t t, char *buf, size_t len)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Every message is decided: the answer in the shape of the route. */
static void finish(struct api_call *c)
{
    if (c->route == ROUTE_BATCH) {
        json_t *out = json_array();
        size_t ok = 0;
        for (size_t i = 0; i < c->n_msgs; i++) {
            json_t *r = json_array_get(c->results, i);
            json_t *one = json_deep_copy(json_object_get(r, "body"));
            json_object_set_new(one, "index", json_integer((json_int_t)i));
            json_object_set_new(one, "status", json_integer(result_status(r)));
            ok += result_status(r) == 202;
            json_array_append_new(out, one);
        }
        api_answer(c, 200,
                   json_pack("{s:o, s:i, s:i}", "results", out, "accepted", (int)ok, "refused",
                             (int)(c->n_msgs - ok)),
                   0);
        return;
    }
    json_t *r = json_array_get(c->results, 0);
    int status = result_status(r);
    int retry = (int)json_integer_value(json_object_get(r, "retry_after"));
    json_t *body = json_incref(json_object_get(r, "body"));
    if (c->route == ROUTE_SENDGRID) {
        if (status == 202) {
            if (c->req)
                evhttp_add_header(evhttp_request_get_output_headers(c->req), "X-Message-Id",
                                  json_string_value(json_object_get(body, "id")));
            json_decref(body);
            body = NULL; /* SendGrid answers 202 with an empty body */
        } else {
            json_t *e = json_object_get(body, "error");
            json_object_set_new(
                body, "errors",
                json_pack("[{s:O, s:O}]", "message", json_object_get(e, "message"), "field",
                          json_object_get(e, "field") ? json_object_get(e, "field") : json_null()));
        }
    } else if (c->route == ROUTE_POSTMARK) {
        if (status == 202) {
            char when[32];
            iso_time(time(NULL), when, sizeof when);
            json_t *to = json_object_get(body, "recipients");
            json_t *pm = json_pack("{s:s, s:s, s:O, s:i, s:s}", "To",
                                   json_string_value(json_object_get(json_array_get(to, 0), "to")),
                                   "SubmittedAt", when, "MessageID", json_object_get(body, "id"),
                                   "ErrorCode", 0, "Message", "OK");
            json_decref(body);
            body = pm;
            status = 200; /* Postmark answers 200 */
        } else {
            json_t *e = json_object_get(body, "error");
            /* Postmark's codes: 300 invalid request, 406 inactive recipient,
             * 429 rate limit; 455 for everything a rule refused */
            int pmcode = status == 422 ? 300 : status == 429 ? 429 : 455;
            json_object_set_new(body, "ErrorCode", json_integer(pmcode));
            json_object_set(body, "Message", json_object_get(e, "message"));
        }
    }
    api_answer(c, status, body, retry);
}

static void one_done(struct api_call *c)
{
    if (--c->pending == 0)
        finish(c);
}

static void on_durable(void *arg, const struct submit_result *res)
{
    struct api_sub *s = arg;
    struct api_call *c = s->c;
    if (res->err) {
        set_error(c, s->index, 503, "temporarily_unavailable", res->reply ? res->reply : "",
                  "storage", 30);
    } else {
        json_t *rc = json_array();
        for (size_t i = 0; i < s->n_rcpts; i++) {
            char rid[40];
            snprintf(rid, sizeof rid, "%s.%zu", res->id_str, i);
            json_array_append_new(rc, json_pack("{s:s, s:s}", "to", s->rcpts[i], "id", rid));
        }
        set_result(c, s->index, 202,
                   json_pack("{s:s, s:s, s:o}", "id", res->id_str, "message_id",
                             res->message_id ? res->message_id : "", "recipients", rc),
                   0);
        /* the owner is also in the spool's meta (auth=); the row is only
         * needed for what the spool does not keep */
        if (s->tags || s->metadata)
            api_store_message(c->s->store, res->id_str, c->cred->name, s->tags, s->metadata,
                              time(NULL));
    }
    sub_free(s);
    one_done(c);
}

static bool parse_path(const char *addr, struct smtp_path *p)
{
    memset(p, 0, sizeof *p);
    if (!*addr) {
        p->is_null = true;
        return true;
    }
    return strlen(addr) <= SMTP_PATH_MAX &&
           smtp_parse_mailbox(addr, strlen(addr), true, p) == SMTP_ADDR_OK;
}

/* Submits one message; the result lands in c->results[index], now (a
 * refusal) or from the spool's callback. */
static void submit_one(struct api_call *c, size_t index, const char *from, const char *const *rcpts,
                       size_t n, bool smtputf8, const char *msg, size_t len, char *tags,
                       char *metadata)
{
    struct relay *r = c->s->r;
    struct api_sub *s = calloc(1, sizeof *s);
    if (!s || !(s->rcpts = calloc(n ? n : 1, sizeof *s->rcpts))) {
        free(s);
        free(tags);
        free(metadata);
        set_error(c, index, 503, "temporarily_unavailable", "out of memory", "memory", 30);
        return;
    }
    s->c = c;
    s->index = index;
    s->tags = tags;
    s->metadata = metadata;
    for (size_t i = 0; i < n; i++)
        if ((s->rcpts[i] = strdup(rcpts[i])))
            s->n_rcpts++;
    struct submit_origin o = {.door = "http",
                              .client_ip = c->ip,
                              .helo = "api",
                              .auth_user = c->cred->name,
                              .auth_method = "api-key",
                              .tls_desc = c->tls[0] ? c->tls : NULL,
                              .cred = c->cred,
                              .esmtp = true};
    s->tx = submit_begin(r, &o);
    if (!s->tx || s->n_rcpts != n) {
        set_error(c, index, 503, "temporarily_unavailable", "out of memory", "memory", 30);
        sub_free(s);
        return;
    }
    bool eight = false;
    for (size_t i = 0; i < len && !eight; i++)
        eight = (unsigned char)msg[i] >= 0x80;
    struct smtp_mail_params mp = {.size = (long long)len,
                                  .body = eight ? SMTP_BODY_8BITMIME : SMTP_BODY_7BIT,
                                  .smtputf8 = smtputf8};
    struct smtp_path p;
    struct authz_refusal ref;
    if (!parse_path(from, &p)) {
        set_error(c, index, 422, "invalid_address", "from: not a valid address", "syntax", 0);
        sub_free(s);
        return;
    }
    if (submit_mail(s->tx, &p, &mp, &ref) < 0) {
        set_refusal(c, index, &ref);
        sub_free(s);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!parse_path(rcpts[i], &p) || p.is_null) {
            set_error(c, index, 422, "invalid_address", "a recipient is not a valid address",
                      "syntax", 0);
            sub_free(s);
            return;
        }
        /* all or nothing: a message is not sent to some of its recipients */
        if (submit_rcpt(s->tx, &p, &ref) < 0) {
            set_refusal(c, index, &ref);
            sub_free(s);
            return;
        }
    }
    submit_feed(s->tx, msg, len);
    if (submit_finish(s->tx, on_durable, s, &ref) < 0) {
        set_refusal(c, index, &ref);
        sub_free(s);
        return;
    }
    c->pending++;
}

static char *pairs_json(const struct api_pair *v, size_t n)
{
    if (!n)
        return NULL;
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, v[i].name, json_string(v[i].value));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

static char *tags_json(const struct api_message *m)
{
    if (!m->n_tags)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; i < m->n_tags; i++)
        json_array_append_new(a, json_string(m->tags[i]));
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* "Name <addr>" for the composer, the name quoted (RFC 5322 3.2.4) so a
 * comma or a quote in it stays part of the name. Allocates. */
static char *mailbox_text(const struct api_addr *a)
{
    if (!a->name)
        return strdup(a->email);
    size_t n = strlen(a->name);
    char *q = malloc(2 * n + strlen(a->email) + 8), *w = q;
    if (!q)
        return NULL;
    *w++ = '"';
    for (const char *p = a->name; *p; p++) {
        if (*p == '"' || *p == '\\')
            *w++ = '\\';
        *w++ = *p;
    }
    sprintf(w, "\" <%s>", a->email);
    return q;
}

struct texts {
    char **v;
    size_t n;
};

static const char *const *mailboxes(struct texts *t, const struct api_addr *v, size_t n)
{
    t->v = calloc(n + 1, sizeof *t->v);
    for (size_t i = 0; t->v && i < n; i++)
        if ((t->v[i] = mailbox_text(&v[i])))
            t->n++;
    return (const char *const *)t->v;
}

static void texts_free(struct texts *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i]);
    free(t->v);
}

/* A parsed JSON message: checks what the intake cannot (send_at), has the
 * composer (mail/compose.h) write the MIME text and submits it. */
static void submit_message(struct api_call *c, size_t index, struct api_message *m)
{
    if (m->send_at > time(NULL) + API_SEND_AT_SLACK) {
        set_error(c, index, 422, "unsupported",
                  "send_at in the future is not supported: send at the time you want it sent",
                  "send_at", 0);
        return;
    }
    struct texts from = {0}, to = {0}, cc = {0}, bcc = {0}, reply = {0};
    mailboxes(&from, &m->from, 1);
    mailboxes(&to, m->to, m->n_to);
    mailboxes(&cc, m->cc, m->n_cc);
    mailboxes(&bcc, m->bcc, m->n_bcc);
    mailboxes(&reply, m->reply_to, m->n_reply_to);
    /* several Reply-To mailboxes are one comma list */
    size_t rl = 1;
    for (size_t i = 0; i < reply.n; i++)
        rl += strlen(reply.v[i]) + 2;
    char *reply_list = reply.n ? calloc(1, rl) : NULL;
    for (size_t i = 0; reply_list && i < reply.n; i++) {
        if (i)
            strcat(reply_list, ", ");
        strcat(reply_list, reply.v[i]);
    }
    struct compose_attachment *att = calloc(m->n_att + 1, sizeof *att);
    struct compose_header *hdr = calloc(m->n_headers + 1, sizeof *hdr);
    for (size_t i = 0; att && i < m->n_att; i++)
        att[i] = (struct compose_attachment){m->att[i].filename, m->att[i].content_type,
                                             m->att[i].data, m->att[i].len, m->att[i].content_id};
    for (size_t i = 0; hdr && i < m->n_headers; i++)
        hdr[i] = (struct compose_header){m->headers[i].name, m->headers[i].value};
    struct compose_msg cm = {.from = from.n ? from.v[0] : NULL,
                             .to = (const char *const *)to.v,
                             .nto = to.n,
                             .cc = (const char *const *)cc.v,
                             .ncc = cc.n,
                             .bcc = (const char *const *)bcc.v,
                             .nbcc = bcc.n,
                             .reply_to = reply_list,
                             .subject = m->subject,
                             .text = m->text,
                             .html = m->html,
                             .attachments = att,
                             .nattachments = m->n_att,
                             .headers = hdr,
                             .nheaders = m->n_headers};
    char *msg = NULL, **rcpts = NULL, err[256];
    size_t len = 0, n = 0;
    bool oom = !from.n || to.n != m->n_to || cc.n != m->n_cc || bcc.n != m->n_bcc ||
               reply.n != m->n_reply_to || (reply.n && !reply_list) || !att || !hdr;
    int rc = oom ? COMPOSE_ENOMEM : compose_build(&cm, &msg, &len, err, sizeof err);
    if (rc == COMPOSE_OK)
        rc = compose_recipients(&cm, &rcpts, &n, err, sizeof err);
    if (rc == COMPOSE_EINVAL)
        set_error(c, index, 422, "invalid_message", err, "compose", 0);
    else if (rc != COMPOSE_OK)
        set_error(c, index, 503, "temporarily_unavailable", "out of memory", "memory", 30);
    else
        submit_one(c, index, m->from.email, (const char *const *)rcpts, n, m->smtputf8, msg, len,
                   tags_json(m), pairs_json(m->metadata, m->n_metadata));
    compose_recipients_free(rcpts, n);
    free(msg);
    free(att);
    free(hdr);
    free(reply_list);
    texts_free(&from);
    texts_free(&to);
    texts_free(&cc);
    texts_free(&bcc);
    texts_free(&reply);
}

static void set_parse_error(struct api_call *c, size_t index, const struct api_req_error *e)
{
    json_t *body = api_error_json(e->code, e->message, NULL);
    if (e->field[0])
        json_object_set_new(json_object_get(body, "error"), "field", json_string(e->field));
    set_result(c, index, e->status, body, 0);
}

static bool content_type_is(const struct api_call *c, const char *type)
{
    size_t n = strlen(type);
    return strncasecmp(c->content_type, type, n) == 0 &&
           (c->content_type[n] == '\0' || c->content_type[n] == ';' || c->content_type[n] == ' ');
}

/* A message/rfc822 body from a Unix file has LF line ends: they become
 * CRLF. A body that already has CRLF is left as it is (a lone LF in it is
 * then refused by the intake, as in SMTP). */
static char *crlf_body(const char *p, size_t len, size_t *outlen)
{
    if (memmem(p, len, "\r\n", 2)) {
        char *o = malloc(len + 1);
        if (o)
            memcpy(o, p, len);
        *outlen = len;
        return o;
    }
    size_t lf = 0;
    for (size_t i = 0; i < len; i++)
        lf += p[i] == '\n';
    char *o = malloc(len + lf + 1), *w = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n')
            *w++ = '\r';
        *w++ = p[i];
    }
    *outlen = (size_t)(w - o);
    return o;
}

static void raw_route(struct api_call *c)
{
    struct api_raw raw;
    struct api_req_error e = {0};
    const char *msg = c->body;
    size_t len = c->body_len;
    int rc;
    if (content_type_is(c, "application/json")) {
        rc = api_raw_from_json(c->body, c->body_len, &raw, &e);
        msg = raw.raw;
        len = raw.raw_len;
    } else if (content_type_is(c, "message/rfc822") || !c->content_type[0]) {
        rc = api_raw_from_query(c->query, &raw, &e);
    } else {
        set_error(c, 0, 415, "unsupported_media_type",
                  "send message/rfc822 (envelope in the query) or application/json", NULL, 0);
        return;
    }
    if (rc < 0) {
        set_parse_error(c, 0, &e);
        return;
    }
    size_t n = 0;
    char *m = crlf_body(msg, len, &n);
    if (!m)
        set_error(c, 0, 503, "temporarily_unavailable", "out of memory", "memory", 30);
    else
        submit_one(c, 0, raw.from.email ? raw.from.email : "", (const char *const *)raw.to,
                   raw.n_to, raw.smtputf8, m, n, NULL, NULL);
    free(m);
    api_raw_clear(&raw);
}

void api_send_route(struct api_call *c)
{
    struct api_req_error e = {0};
    json_t *batch = NULL;
    c->n_msgs = 1;
    if (c->route == ROUTE_BATCH) {
        batch = api_batch_parse(c->body, c->body_len, &e);
        if (!batch) {
            api_answer(c, e.status, api_error_json(e.code, e.message, NULL), 0);
            return;
        }
        c->n_msgs = json_array_size(batch);
    } else if (c->route != ROUTE_RAW && c->body_len && !content_type_is(c, "application/json")) {
        api_fail(c, 415, "unsupported_media_type", "the body must be application/json", NULL, 0);
        return;
    }
    c->results = json_array();
    for (size_t i = 0; i < c->n_msgs; i++)
        json_array_append_new(c->results, json_null());
    c->pending = 1; /* held until every message is submitted */
    if (c->route == ROUTE_RAW) {
        raw_route(c);
    } else {
        enum api_shape shape = c->route == ROUTE_SENDGRID   ? API_SHAPE_SENDGRID
                               : c->route == ROUTE_POSTMARK ? API_SHAPE_POSTMARK
                                                            : API_SHAPE_NATIVE;
        for (size_t i = 0; i < c->n_msgs; i++) {
            struct api_message m;
            int rc = batch ? api_message_from_json(json_array_get(batch, i), shape, &m, &e)
                           : api_message_parse(c->body, c->body_len, shape, &m, &e);
            if (rc < 0) {
                set_parse_error(c, i, &e);
                continue;
            }
            submit_message(c, i, &m);
            api_message_clear(&m);
        }
    }
    json_decref(batch);
    one_done(c);
}
