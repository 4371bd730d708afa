/* Webhooks: delivery events POSTed as JSON to the configured URLs, signed
 * with HMAC-SHA-256, retried with backoff until a 2xx answer. Events go
 * first to an append-only outbox file under the state directory; one sender
 * thread per URL walks the outbox in order and keeps its position in a cursor
 * file, so a restart resumes where it stopped (at-least-once: receivers
 * dedupe by the event's "id"). The event loop only appends to the file. */
#ifndef SLUICE_HTTP_WEBHOOK_H
#define SLUICE_HTTP_WEBHOOK_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct webhook_options {
    unsigned backoff_min_ms; /* first retry delay; default 1000 */
    unsigned backoff_max_ms; /* cap of the doubling delay; default 300000 */
    unsigned timeout_ms;     /* whole request; default 10000 */
};

struct webhook;

/* urls: comma-separated http(s) URLs. secret_file: shared secret for the
 * signature (NULL or "": requests are not signed). state_dir: where
 * outbox.jsonl and the cursors live (created if missing). opt may be NULL.
 * Starts one thread per URL. Allocates; NULL with err set. */
struct webhook *webhook_open(const char *urls, const char *secret_file, const char *state_dir,
                             const struct webhook_options *opt, char *err, size_t errlen);

/* Queues an event for every URL. Takes ownership of `event` (an object);
 * adds "id" (unique, stable across retries) and "ts" unless present. One
 * write(2) to the outbox, no waiting for the network. Safe from several
 * threads. Returns 0 or -errno. */
int webhook_emit(struct webhook *w, json_t *event);

/* Events not yet delivered to the slowest URL. */
uint64_t webhook_pending(struct webhook *w);

/* Stops the senders (an attempt in flight is abandoned and retried at the
 * next start) and frees. NULL is accepted. */
void webhook_free(struct webhook *w);

/* The signature header value for a body sent at `timestamp`:
 * "sha256=" + hex HMAC-SHA-256(secret, timestamp + "." + body). out needs
 * 72 bytes. Exported for tests and receivers written in C. */
int webhook_signature(const unsigned char *secret, size_t secretlen, const char *timestamp,
                      const char *body, size_t bodylen, char *out, size_t outlen);

#endif
