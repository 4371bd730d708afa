/* The one runtime context of the daemon, passed explicitly to every part:
 * configuration, event loop, spool, queue, TLS and the connection table. */
#ifndef SLUICE_CORE_RELAY_H
#define SLUICE_CORE_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>

struct sockaddr;

struct config;
struct event_base;
struct evdns_base;
struct spool;
struct queue;
struct deliver;
struct users;
struct worker;
struct listener_set;
struct control;
struct cidr_list;
struct signing;
struct tls_offload;
struct creds;
struct accounting;
struct ratelimit;
struct authfail;
struct authcache;
struct events;
struct events_observer;
struct metrics_http;
struct api_server;
struct env_secrets;

struct relay_counters {
    uint64_t connections, accepted, rejected, bytes_accepted;
    uint64_t delivered, deferred, failed, bounces;
    uint64_t auth_failures, tls_failures, smuggling_attempts, upstream_unhealthy;
};

struct relay {
    struct config *cfg;
    struct event_base *base;
    struct evdns_base *dns;
    struct spool *spool;
    struct queue *queue;
    struct deliver *deliver;
    struct users *users;
    struct signing *signing; /* DKIM keys; replaced on SIGHUP */
    struct worker *worker;
    struct listener_set *listeners;
    struct control *control;
    void *session_list;     /* owned by smtp/session.c */
    struct api_server *api; /* the HTTPS submission API (httpd/api.c); NULL when off */
    /* how lower levels reach higher ones: wired by the daemon (cli/serve.c) */
    struct relay_hooks {
        /* an accepted connection becomes a session (smtp/session.c) */
        void (*session_start)(struct relay *r, int fd, const struct sockaddr *sa, int salen,
                              bool implicit_tls, bool unauth);
        /* closes the longest-waiting unauthenticated session; false: none */
        bool (*session_evict_unauth)(struct relay *r);
        /* a message is durable in the spool (intake/submit.c): the queue takes it */
        void (*message_durable)(struct relay *r, uint64_t id);
        /* an upstream is healthy again (queue/queue.c releases its mail) */
        void (*upstream_recovered)(struct relay *r);
    } hooks;
    struct cidr_list *relay_nets; /* may relay without AUTH */
    /* credentials and policy (src/policy/policy.c opens and closes these) */
    struct creds *creds;           /* SQLite credential store */
    struct accounting *accounting; /* per-credential daily counters */
    struct ratelimit *ratelimit;   /* per credential and per source IP */
    struct authfail *authfail;     /* failed AUTH per source IP: slow down, then block */
    struct authcache *authcache;   /* recent successful password checks; NULL = off */
    /* observability: the event bus's listeners (cli/observe.c) and their state */
    const struct events_observer *observer;
    struct events *events;
    struct metrics_http *metrics;
    /* secret_env values, taken out of the environment (core/secrets.h) */
    struct env_secrets *env_secrets;
    SSL_CTX *tls;                    /* replaced on SIGHUP; sessions keep their own SSL */
    struct tls_offload *tls_offload; /* handshake threads ([server] threads); NULL: on the loop */
    bool draining;                   /* SIGTERM received */
    unsigned sessions;               /* open sessions */
    long long inflight_bytes;        /* message buffers of all sessions (intake/msgbuf.h) */
    struct relay_counters n;
};

#endif
