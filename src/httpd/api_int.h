/* Shared between the files of the API door: the server, one call (an HTTP
 * request from its authentication to its answer) and the answer helpers. */
#ifndef SLUICE_HTTPD_API_INT_H
#define SLUICE_HTTPD_API_INT_H

#include "core/events.h"
#include "httpd/api_request.h"
#include "httpd/api_store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct relay;
struct cred;
struct evhttp;
struct evhttp_request;
struct evhttp_connection;
struct api_events;

/* A key proven lately, for the requests that follow on keep-alive
 * connections: found by the SHA-256 of the key and the client address,
 * valid while the credential store is unchanged and for API_KEY_TTL. Calls
 * borrow its credential (refs). */
#define API_KEY_CACHE 64
#define API_KEY_TTL 60

struct api_key_entry {
    unsigned char sha[32];
    char ip[64];
    struct cred *cred; /* NULL: free slot */
    uint64_t gen;
    time_t until;
    unsigned refs;
    bool stale; /* dropped while borrowed: freed by the last call */
};

struct api_server {
    struct relay *r;
    struct api_key_entry keys[API_KEY_CACHE];
    size_t key_next;
    struct evhttp *http;
    int port;
    size_t max_body;
    struct api_store *store;
    struct api_events *events;
    /* the daemon's observer, which ours forwards every event to */
    const struct events_observer *prev;
    struct events_observer chain;
    unsigned calls; /* open calls: each holds the server */
};

enum api_route {
    ROUTE_NONE,
    ROUTE_SEND,     /* POST /v1/messages */
    ROUTE_RAW,      /* POST /v1/messages/raw */
    ROUTE_BATCH,    /* POST /v1/messages/batch */
    ROUTE_SENDGRID, /* POST /v3/mail/send */
    ROUTE_POSTMARK, /* POST /email */
    ROUTE_MESSAGE,  /* GET /v1/messages/{id} */
    ROUTE_LIST,     /* GET /v1/messages?state= (the queue: queued, held, dead letters) */
    ROUTE_RETRY,    /* POST /v1/messages/{id}/retry */
    ROUTE_EVENTS,   /* GET /v1/events */
    ROUTE_OPENAPI,  /* GET /v1/openapi.json */
};

struct api_call {
    struct api_server *s;
    struct evhttp_request *req; /* NULL once the client has gone */
    struct evhttp_connection *conn;
    enum api_route route;
    char path_id[24]; /* {id} of the path */
    char *query;      /* the decoded-later query string, or NULL */
    char *body;
    size_t body_len;
    char content_type[128];
    struct cred *cred;               /* allocated, or borrowed from key_entry */
    struct api_key_entry *key_entry; /* the cache entry cred is borrowed from */
    unsigned char key_sha[32];
    char ip[64];
    char tls[128];
    char key[API_IDEM_KEY_MAX + 1]; /* Idempotency-Key; "" without */
    bool idem;                      /* the key is held by this call */
    char *api_key;                  /* while a worker checks it */
    int auth_rc;
    /* submissions */
    size_t pending; /* messages submitted whose spool outcome is not known */
    size_t n_msgs;
    json_t *results; /* one object per message: {"status": N, ...} */
};

/* Answers and ends the call: JSON body (stolen), status, optional
 * Retry-After. Records the answer under the call's Idempotency-Key. */
void api_answer(struct api_call *c, int status, json_t *body, int retry_after);
/* {"error": {"code", "message", "rule"}} (rule may be NULL). */
void api_fail(struct api_call *c, int status, const char *code, const char *message,
              const char *rule, int retry_after);
json_t *api_error_json(const char *code, const char *message, const char *rule);

/* api_send.c: the submission routes. */
void api_send_route(struct api_call *c);

/* api_read.c: the routes that read or re-drive. */
void api_read_route(struct api_call *c);

/* The observer callbacks that feed the event ring (api_read.c). */
void api_observe_install(struct api_server *s);
void api_observe_remove(struct api_server *s);

#endif
