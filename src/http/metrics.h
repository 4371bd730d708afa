/* Metrics and health over HTTP: GET /metrics in the Prometheus text format
 * 0.0.4, GET /healthz (the process answers) and GET /readyz (the relay can
 * accept and spool mail: listeners open, spool writable, disk not full;
 * upstream health is reported but does not decide). The numbers come from a
 * snapshot that a callback fills on the event loop at each request, so the
 * relay's state is read without locks. */
#ifndef SLUICE_HTTP_METRICS_H
#define SLUICE_HTTP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct evbuffer;

#define METRICS_MAX_BUCKETS 24

/* A latency histogram the relay keeps and copies into the snapshot.
 * counts[i] holds observations in (bounds[i-1], bounds[i]]; counts[n_bounds]
 * those above the last bound. Not cumulative: the renderer sums. */
struct metrics_histogram {
    size_t n_bounds;
    double bounds[METRICS_MAX_BUCKETS]; /* ascending, seconds */
    uint64_t counts[METRICS_MAX_BUCKETS + 1];
    double sum;
    uint64_t count;
};

/* Default delivery-latency bounds: 0.05 s .. 1 h (delivery includes
 * retries, so the tail is long). */
void metrics_histogram_init_latency(struct metrics_histogram *h);
/* Uses the first n (at most METRICS_MAX_BUCKETS) ascending bounds. */
void metrics_histogram_init(struct metrics_histogram *h, const double *bounds, size_t n);
void metrics_histogram_observe(struct metrics_histogram *h, double value);

struct metrics_count {
    char *name;
    uint64_t value;
};

/* Outcomes per upstream or per credential (SMTP AUTH user / API key name). */
struct metrics_outcomes {
    char *name;
    uint64_t delivered, deferred, failed;
};

struct metrics_health {
    char *name;
    bool up;
};

struct metrics_snapshot {
    /* process */
    double start_time;    /* unix seconds; 0 = not rendered */
    uint64_t connections; /* accepted TCP connections */
    unsigned sessions;    /* open SMTP sessions */
    /* intake */
    uint64_t accepted; /* messages accepted (250 sent) */
    uint64_t bytes_accepted;
    struct metrics_count *rejected; /* by reason ("policy", "size", "rate", ...) */
    size_t n_rejected;
    /* delivery */
    struct metrics_outcomes *upstreams;
    size_t n_upstreams;
    struct metrics_outcomes *credentials;
    size_t n_credentials;
    uint64_t bounces;                 /* DSNs generated */
    struct metrics_histogram latency; /* accept -> delivered, seconds */
    /* queue depth by state */
    struct {
        uint64_t ready, deferred, held, inflight, dead;
    } queue;
    double oldest_message_age; /* seconds; 0 when the queue is empty */
    /* security */
    uint64_t tls_handshake_failures;
    uint64_t auth_failures;
    uint64_t smuggling_attempts;
    /* AUTH work: the login cache and the secret checks actually run */
    struct {
        uint64_t cache_hits, cache_misses, cache_evictions, cache_entries;
        uint64_t argon2_verifications, hmac_key_verifications;
    } auth;
    /* health */
    struct metrics_health *health; /* one per configured upstream */
    size_t n_health;
    bool spool_writable;
    bool accepting;            /* listeners open and not draining */
    bool spool_space_known;    /* statvfs of the spool folder succeeded */
    uint64_t spool_free_bytes; /* available to the daemon on the spool's file system */
    uint64_t spool_min_free;   /* below this the disk counts as full */
    struct {
        uint64_t damaged_ranges, damaged_bytes; /* skipped by recovery at this start */
        uint64_t compaction_bytes, compaction_turns;
        uint64_t unrecorded, append_failures; /* state changes not yet durable */
    } spool;
    uint64_t webhook_pending; /* events not yet delivered to every URL */
};

/* Append a copy of name with its numbers. Return 0 or -1 (no memory). */
int metrics_snapshot_add_rejected(struct metrics_snapshot *s, const char *reason, uint64_t n);
int metrics_snapshot_add_upstream(struct metrics_snapshot *s, const char *name, uint64_t delivered,
                                  uint64_t deferred, uint64_t failed);
int metrics_snapshot_add_credential(struct metrics_snapshot *s, const char *name,
                                    uint64_t delivered, uint64_t deferred, uint64_t failed);
int metrics_snapshot_add_health(struct metrics_snapshot *s, const char *name, bool up);
/* Frees the arrays and zeroes the whole snapshot. */
void metrics_snapshot_clear(struct metrics_snapshot *s);

/* Renders the snapshot as Prometheus text (format 0.0.4). Pure. Returns 0
 * or -1. */
int metrics_render(const struct metrics_snapshot *s, struct evbuffer *out);

/* Ready: accepting, spool writable and spool_min_free bytes free on its
 * disk. Mail queues while every upstream is down, so upstreams do not
 * decide; their count is reported. Writes JSON to out
 * ({"status":"ready","upstreams_healthy":N,"upstreams":M} or
 * {"status":"not ready","reasons":[...],...}). Pure. */
bool metrics_ready(const struct metrics_snapshot *s, struct evbuffer *out);

typedef void (*metrics_fill_fn)(struct relay *r, struct metrics_snapshot *s);

struct metrics_http;

/* Listens on r->cfg->http_listen ("host:port", "[v6addr]:port"; port 0
 * picks one) on r->base. `fill` is called on the loop thread for each
 * /metrics and /readyz request with a zeroed snapshot, cleared afterwards.
 * Allocates; NULL with err set. */
struct metrics_http *metrics_http_open(struct relay *r, metrics_fill_fn fill, char *err,
                                       size_t errlen);

/* The port actually bound. */
int metrics_http_port(const struct metrics_http *m);

void metrics_http_free(struct metrics_http *m);

#endif
