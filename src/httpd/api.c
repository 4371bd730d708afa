/* The HTTPS submission API: evhttp over bufferevent_openssl on its own
 * port. evhttp because it is already linked (the /metrics endpoint), keeps
 * HTTP/1.1 connections alive, and enforces header and body size limits and
 * read/write timeouts itself. Here: the listener, routing, authentication
 * (Bearer API keys), scopes, Idempotency-Key and the JSON answers; the
 * routes are in api_send.c and api_read.c. */
#include "httpd/api.h"

#include "core/config.h"
#include "core/log.h"
#include "core/relay.h"
#include "core/worker.h"
#include "httpd/api_events.h"
#include "httpd/api_int.h"
#include "httpd/api_status.h"
#include "net/tls.h"
#include "policy/creds.h"
#include "policy/ratelimit.h"
#include "policy/policy.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

extern const char api_openapi_json[];
extern const size_t api_openapi_json_len;

#define API_HEADERS_MAX 16384
/* base64 makes 4 octets of 3, line breaks add some more: 1.4 times the
 * largest message, plus room for the JSON around it */
#define API_BODY_FACTOR 1.4
#define API_BODY_SLACK (64 * 1024)

json_t *api_error_json(const char *code, const char *message, const char *rule)
{
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", message);
    if (e && rule)
        json_object_set_new(e, "rule", json_string(rule));
    return json_pack("{s:o}", "error", e ? e : json_object());
}

/* ---- proven keys ---- */

static void key_release(struct api_key_entry *e)
{
    if (--e->refs == 0 && e->stale) {
        creds_free_cred(e->cred);
        memset(e, 0, sizeof *e);
    }
}

static void key_drop(struct api_key_entry *e)
{
    if (!e->cred || e->stale)
        return;
    if (e->refs) {
        e->stale = true; /* still borrowed */
        return;
    }
    creds_free_cred(e->cred);
    memset(e, 0, sizeof *e);
}

static void key_cache_clear(struct api_server *s)
{
    for (size_t i = 0; i < API_KEY_CACHE; i++)
        key_drop(&s->keys[i]);
}

/* The entry for this key and address, still valid, or NULL. */
static struct api_key_entry *key_find(struct api_server *s, const unsigned char sha[32],
                                      const char *ip, uint64_t gen, time_t now)
{
    for (size_t i = 0; i < API_KEY_CACHE; i++) {
        struct api_key_entry *e = &s->keys[i];
        if (!e->cred || e->stale)
            continue;
        if (e->gen != gen || e->until < now) {
            key_drop(e);
            continue;
        }
        if (CRYPTO_memcmp(e->sha, sha, 32) == 0 && strcmp(e->ip, ip) == 0)
            return e;
    }
    return NULL;
}

/* Takes over c->cred into a free slot; the call borrows it from there. */
static void key_remember(struct api_call *c, uint64_t gen, time_t now)
{
    struct api_server *s = c->s;
    for (size_t n = 0; n < API_KEY_CACHE; n++) {
        struct api_key_entry *e = &s->keys[s->key_next];
        s->key_next = (s->key_next + 1) % API_KEY_CACHE;
        if (e->cred && (e->refs || e->stale))
            continue;
        key_drop(e);
        memcpy(e->sha, c->key_sha, 32);
        snprintf(e->ip, sizeof e->ip, "%s", c->ip);
        e->cred = c->cred;
        e->gen = gen;
        e->until = now + API_KEY_TTL;
        e->refs = 1;
        c->key_entry = e;
        return;
    }
}

static void call_free(struct api_call *c)
{
    if (c->req)
        evhttp_connection_set_closecb(c->conn, NULL, NULL);
    if (c->idem)
        api_idem_finish(c->s->store, c->cred ? c->cred->id : 0, c->key, 500, "", time(NULL));
    c->s->calls--;
    if (c->key_entry)
        key_release(c->key_entry);
    else
        creds_free_cred(c->cred);
    free(c->query);
    free(c->body);
    free(c->api_key);
    json_decref(c->results);
    free(c);
}

void api_answer(struct api_call *c, int status, json_t *body, int retry_after)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (c->idem) {
        api_idem_finish(c->s->store, c->cred->id, c->key, status, text ? text : "", time(NULL));
        c->idem = false;
    }
    if (c->req) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
        if (text)
            evhttp_add_header(h, "Content-Type", "application/json");
        evhttp_add_header(h, "Cache-Control", "no-store");
        if (retry_after > 0) {
            char ra[16];
            snprintf(ra, sizeof ra, "%d", retry_after);
            evhttp_add_header(h, "Retry-After", ra);
        }
        if (status == 401)
            evhttp_add_header(h, "WWW-Authenticate", "Bearer realm=\"sluice\"");
        struct evbuffer *b = evbuffer_new();
        if (b && text)
            evbuffer_add(b, text, strlen(text));
        evhttp_connection_set_closecb(c->conn, NULL, NULL);
        evhttp_send_reply(c->req, status, api_status_phrase(status), b);
        if (b)
            evbuffer_free(b);
        c->req = NULL;
    }
    free(text);
    call_free(c);
}

void api_fail(struct api_call *c, int status, const char *code, const char *message,
              const char *rule, int retry_after)
{
    api_answer(c, status, api_error_json(code, message, rule), retry_after);
}

/* ---- routing ---- */

static bool id_segment(const char *s, size_t n)
{
    if (n == 0 || n > 16)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

/* The route of path for method; *allowed gets the methods the path takes
 * (for 405) when the path is known. */
static enum api_route route_of(const char *path, enum evhttp_cmd_type cmd, char id[24],
                               const char **allowed)
{
    static const struct {
        const char *path;
        enum api_route route;
        enum evhttp_cmd_type cmd;
    } fixed[] = {
        {"/v1/messages", ROUTE_SEND, EVHTTP_REQ_POST},
        {"/v1/messages/raw", ROUTE_RAW, EVHTTP_REQ_POST},
        {"/v1/messages/batch", ROUTE_BATCH, EVHTTP_REQ_POST},
        {"/v3/mail/send", ROUTE_SENDGRID, EVHTTP_REQ_POST},
        {"/email", ROUTE_POSTMARK, EVHTTP_REQ_POST},
        {"/v1/events", ROUTE_EVENTS, EVHTTP_REQ_GET},
        {"/v1/openapi.json", ROUTE_OPENAPI, EVHTTP_REQ_GET},
    };
    *allowed = NULL;
    if (strcmp(path, "/v1/messages") == 0) {
        /* POST submits, GET lists the queue */
        *allowed = "GET, HEAD, POST";
        return cmd == EVHTTP_REQ_POST                            ? ROUTE_SEND
               : cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD ? ROUTE_LIST
                                                                 : ROUTE_NONE;
    }
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(path, fixed[i].path) == 0) {
            *allowed = fixed[i].cmd == EVHTTP_REQ_POST ? "POST" : "GET, HEAD";
            bool ok =
                cmd == fixed[i].cmd || (fixed[i].cmd == EVHTTP_REQ_GET && cmd == EVHTTP_REQ_HEAD);
            return ok ? fixed[i].route : ROUTE_NONE;
        }
    const char *pre = "/v1/messages/";
    if (strncmp(path, pre, strlen(pre)) != 0)
        return ROUTE_NONE;
    const char *p = path + strlen(pre);
    size_t n = strcspn(p, "/");
    if (!id_segment(p, n))
        return ROUTE_NONE;
    memcpy(id, p, n);
    id[n] = '\0';
    if (!p[n]) {
        *allowed = "GET, HEAD";
        return cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD ? ROUTE_MESSAGE : ROUTE_NONE;
    }
    if (strcmp(p + n, "/retry") == 0) {
        *allowed = "POST";
        return cmd == EVHTTP_REQ_POST ? ROUTE_RETRY : ROUTE_NONE;
    }
    return ROUTE_NONE;
}

static unsigned scope_of(enum api_route r)
{
    switch (r) {
    case ROUTE_MESSAGE:
    case ROUTE_LIST:
    case ROUTE_EVENTS:
        return CRED_SCOPE_READ;
    case ROUTE_RETRY:
        return CRED_SCOPE_ADMIN;
    default:
        return CRED_SCOPE_SEND;
    }
}

static const char *scope_name(unsigned s)
{
    return s == CRED_SCOPE_READ ? "read" : s == CRED_SCOPE_ADMIN ? "admin" : "send";
}

/* ---- the call after authentication ---- */

static void sha256_hex(struct api_call *c, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    const char *uri = evhttp_request_get_uri(c->req);
    EVP_DigestInit_ex(x, EVP_sha256(), NULL);
    EVP_DigestUpdate(x, uri, strlen(uri) + 1);
    EVP_DigestUpdate(x, c->body ? c->body : "", c->body_len);
    EVP_DigestFinal_ex(x, md, &mdlen);
    EVP_MD_CTX_free(x);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void authorised(struct api_call *c)
{
    unsigned need = scope_of(c->route);
    unsigned have = c->cred->scopes;
    if (have & CRED_SCOPE_ADMIN)
        have |= CRED_SCOPE_READ; /* admin reads every credential's data */
    if (!(have & need)) {
        char msg[128];
        snprintf(msg, sizeof msg, "the credential lacks the '%s' scope", scope_name(need));
        api_fail(c, 403, "missing_scope", msg, "scope", 0);
        return;
    }
    if (c->key[0]) {
        char sha[65];
        sha256_hex(c, sha);
        int status = 0;
        char *body = NULL;
        switch (api_idem_begin(c->s->store, c->cred->id, c->key, sha, time(NULL), &status, &body)) {
        case API_IDEM_NEW:
            c->idem = true;
            break;
        case API_IDEM_REPLAY: {
            json_t *j = json_loads(body, 0, NULL);
            free(body);
            if (c->req)
                evhttp_add_header(evhttp_request_get_output_headers(c->req), "Idempotent-Replayed",
                                  "true");
            api_answer(c, status, j, 0);
            return;
        }
        case API_IDEM_MISMATCH:
            api_fail(c, 409, "idempotency_key_reused",
                     "this Idempotency-Key was used with a different request", "idempotency", 0);
            return;
        case API_IDEM_BUSY:
            api_fail(c, 409, "idempotency_key_in_flight",
                     "a request with this Idempotency-Key is still being processed; retry later",
                     "idempotency", 1);
            return;
        default:
            api_fail(c, 503, "temporarily_unavailable", "the idempotency store failed", "storage",
                     30);
            return;
        }
    }
    if (c->route == ROUTE_MESSAGE || c->route == ROUTE_LIST || c->route == ROUTE_EVENTS ||
        c->route == ROUTE_RETRY)
        api_read_route(c);
    else
        api_send_route(c);
}

static void auth_result(struct api_call *c, int rc)
{
    struct relay *r = c->s->r;
    if (rc == 0 && c->cred) {
        events_auth(r, c->ip, "api-key", c->cred->name, true, NULL);
        if (!c->cred->revoked)
            key_remember(c, policy_generation(r), time(NULL));
        authorised(c);
        return;
    }
    creds_free_cred(c->cred);
    c->cred = NULL;
    struct authfail_verdict v = {0};
    if (r->authfail)
        authfail_record(r->authfail, c->ip, policy_now_ms(), &v);
    events_auth(r, c->ip, "api-key", NULL, false,
                rc == CREDS_EDENIED ? "wrong or revoked key" : "unknown key");
    api_fail(c, 401, "unauthorized", "the API key is not valid", "credential", 0);
}

static void verify_work(void *arg)
{
    struct api_call *c = arg;
    c->auth_rc = creds_verify_api_key(c->s->r->creds, c->api_key, &c->cred);
}

static void verify_done(void *arg)
{
    struct api_call *c = arg;
    free(c->api_key);
    c->api_key = NULL;
    auth_result(c, c->auth_rc);
}

static void authenticate(struct api_call *c)
{
    struct relay *r = c->s->r;
    struct evkeyvalq *h = evhttp_request_get_input_headers(c->req);
    const char *auth = evhttp_find_header(h, "Authorization");
    const char *key = NULL;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
        key = auth + 7;
    else if (c->route == ROUTE_POSTMARK)
        key = evhttp_find_header(h, "X-Postmark-Server-Token");
    while (key && *key == ' ')
        key++;
    if (!key || !*key) {
        api_fail(c, 401, "unauthorized", "an API key is required: Authorization: Bearer sk_...",
                 "credential", 0);
        return;
    }
    struct authfail_verdict v = {0};
    if (r->authfail)
        authfail_check(r->authfail, c->ip, policy_now_ms(), &v);
    if (v.blocked) {
        api_fail(c, 429, "auth_blocked", "too many failed authentications from this address",
                 "auth_failures", (int)v.retry_after_s);
        return;
    }
    if (!r->creds) {
        api_fail(c, 503, "temporarily_unavailable", "no credential store", "credential", 30);
        return;
    }
    /* a key proven lately from this address is taken again without the
     * store; any change to the store (a revocation) ends that */
    unsigned int mdlen = 0;
    EVP_Digest(key, strlen(key), c->key_sha, &mdlen, EVP_sha256(), NULL);
    uint64_t gen = policy_generation(r);
    time_t now = time(NULL);
    struct api_key_entry *e = key_find(c->s, c->key_sha, c->ip, gen, now);
    if (e) {
        e->refs++;
        c->key_entry = e;
        c->cred = e->cred;
        authorised(c);
        return;
    }
    int rc = creds_verify_api_key_quick(r->creds, key, &c->cred);
    if (rc == CREDS_EAGAIN && r->worker) {
        /* a key an older release stored as argon2id: checked off the loop */
        c->api_key = strdup(key);
        if (c->api_key && worker_submit(r->worker, verify_work, verify_done, c) == 0)
            return;
        rc = CREDS_EDB;
    }
    auth_result(c, rc);
}

static void on_close(struct evhttp_connection *conn, void *arg)
{
    struct api_call *c = arg;
    c->req = NULL; /* freed by evhttp; the call finishes without an answer */
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct api_server *s = arg;
    struct api_call *c = calloc(1, sizeof *c);
    if (!c) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    c->s = s;
    c->req = req;
    c->conn = evhttp_request_get_connection(req);
    s->calls++;
    char *addr = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(c->conn, &addr, &port);
    snprintf(c->ip, sizeof c->ip, "%s", addr ? addr : "");
    struct bufferevent *bev = evhttp_connection_get_bufferevent(c->conn);
    /* the answer leaves as header and body records: without TCP_NODELAY the
     * second waits for the client's delayed ACK (ARCHITECTURE.md, TCP_NODELAY
     * on every socket) */
    int one = 1;
    setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl)
        tls_describe(ssl, c->tls, sizeof c->tls);
    evhttp_connection_set_closecb(c->conn, on_close, c);

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (query)
        c->query = strdup(query);
    const char *allowed = NULL;
    c->route = route_of(path ? path : "/", evhttp_request_get_command(req), c->path_id, &allowed);
    if (c->route == ROUTE_NONE) {
        if (allowed) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allowed);
            api_fail(c, 405, "method_not_allowed", "this method is not allowed here", NULL, 0);
        } else {
            api_fail(c, 404, "not_found", "no such endpoint; see /v1/openapi.json", NULL, 0);
        }
        return;
    }
    if (c->route == ROUTE_OPENAPI) {
        json_t *doc = json_loadb(api_openapi_json, api_openapi_json_len, 0, NULL);
        api_answer(c, doc ? 200 : 500, doc ? doc : api_error_json("internal", "no document", NULL),
                   0);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *ct = evhttp_find_header(h, "Content-Type");
    snprintf(c->content_type, sizeof c->content_type, "%s", ct ? ct : "");
    const char *key = evhttp_find_header(h, "Idempotency-Key");
    if (key) {
        size_t kl = strlen(key);
        bool ok = kl > 0 && kl <= API_IDEM_KEY_MAX;
        for (size_t i = 0; ok && i < kl; i++)
            ok = key[i] > 0x20 && key[i] < 0x7f;
        if (!ok) {
            api_fail(c, 400, "invalid_idempotency_key",
                     "Idempotency-Key: 1 to 255 printable ASCII characters", "idempotency", 0);
            return;
        }
        memcpy(c->key, key, kl + 1);
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    c->body_len = evbuffer_get_length(in);
    c->body = malloc(c->body_len + 1);
    if (!c->body) {
        api_fail(c, 503, "temporarily_unavailable", "out of memory", "memory", 30);
        return;
    }
    evbuffer_remove(in, c->body, c->body_len);
    c->body[c->body_len] = '\0';
    authenticate(c);
}

/* Each connection gets its own SSL from the current context (a SIGHUP
 * replaces r->tls; open connections keep theirs). */
static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    struct api_server *s = arg;
    SSL *ssl = SSL_new(s->r->tls);
    if (!ssl)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    else
        SSL_free(ssl);
    return bev;
}

static int split_listen(const char *spec, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(spec, ':');
    if (!colon)
        return -1;
    size_t hl = (size_t)(colon - spec);
    if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    if (hl >= hostlen)
        return -1;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    *port = atoi(colon + 1);
    return 0;
}

int api_start(struct relay *r, char *err, size_t errlen)
{
    const struct config *cfg = r->cfg;
    r->api = NULL;
    if (!cfg->api_listen || !*cfg->api_listen)
        return 0;
    char host[256];
    int port;
    if (split_listen(cfg->api_listen, host, sizeof host, &port) < 0) {
        snprintf(err, errlen, "[api] listen %s: expected host:port", cfg->api_listen);
        return -1;
    }
    struct api_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->r = r;
    char path[4096];
    snprintf(path, sizeof path, "%s/api.db", cfg->var_dir);
    s->store = api_store_open(path, cfg->api_idempotency_window, err, errlen);
    s->events = api_events_new((size_t)cfg->api_event_buffer);
    s->http = evhttp_new(r->base);
    if (!s->store || !s->events || !s->http) {
        if (s->store && s->events)
            snprintf(err, errlen, "cannot create the API server");
        goto fail;
    }
    s->max_body = (size_t)((double)cfg->max_message_size * API_BODY_FACTOR) + API_BODY_SLACK;
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH |
                                            EVHTTP_REQ_OPTIONS);
    evhttp_set_max_headers_size(s->http, API_HEADERS_MAX);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->max_body);
    evhttp_set_timeout(s->http, cfg->api_request_timeout);
    evhttp_set_default_content_type(s->http, "application/json");
    evhttp_set_bevcb(s->http, make_bev, s);
    evhttp_set_gencb(s->http, handle, s);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(s->http, host, (uint16_t)port);
    if (!bs) {
        snprintf(err, errlen, "[api] listen %s: %s", cfg->api_listen,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0)
        s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    r->api = s; /* before the observer: its callbacks find the server here */
    api_observe_install(s);
    log_event(LOG_INFO, "api.listening", "address", "%s", cfg->api_listen, "port", "#%d", s->port,
              NULL);
    return 0;
fail:
    if (s->http)
        evhttp_free(s->http);
    api_events_free(s->events);
    api_store_close(s->store);
    free(s);
    return -1;
}

int api_port(const struct relay *r)
{
    return r->api ? r->api->port : 0;
}

void api_stop(struct relay *r)
{
    struct api_server *s = r->api;
    if (!s)
        return;
    api_observe_remove(s);
    key_cache_clear(s);
    /* frees every connection and its pending requests; calls still waiting
     * for the spool finish without an answer */
    evhttp_free(s->http);
    s->http = NULL;
    api_events_free(s->events);
    s->events = NULL;
    if (!s->calls) {
        api_store_close(s->store);
        free(s);
    }
    r->api = NULL;
}
