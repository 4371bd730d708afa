/* What the API remembers across restarts, in <var_dir>/api.db (SQLite, WAL):
 * the answers given under an Idempotency-Key (per credential, for the
 * idempotency window) and, per message submitted through the API with tags
 * or metadata, who sent it with those (GET /v1/messages/{id} shows them;
 * the owner of other mail comes from the spool's meta). A key whose request is still in flight is
 * held in memory only: after a crash it was never answered, so it is free again. Threads: the event
 * loop only. */
#ifndef SLUICE_HTTPD_API_STORE_H
#define SLUICE_HTTPD_API_STORE_H

#include <stddef.h>
#include <time.h>

struct api_store;

#define API_IDEM_KEY_MAX 255

struct api_store *api_store_open(const char *path, int window_s, char *err, size_t errlen);
void api_store_close(struct api_store *s);

enum api_idem {
    API_IDEM_NEW,      /* not seen: the request goes ahead and holds the key */
    API_IDEM_REPLAY,   /* seen with the same body: *status and *body are the first answer */
    API_IDEM_MISMATCH, /* seen with another body: 409 */
    API_IDEM_BUSY,     /* the first request with this key has not been answered: 409 */
    API_IDEM_ERROR,    /* the store failed: 503 */
};

/* body_sha: hex SHA-256 of the method, path and body. *body is allocated
 * on REPLAY. */
enum api_idem api_idem_begin(struct api_store *s, long long cred, const char *key,
                             const char *body_sha, time_t now, int *status, char **body);
/* The answer to the request that holds the key: a 2xx is kept for the
 * window, anything else frees the key for a new try. */
void api_idem_finish(struct api_store *s, long long cred, const char *key, int status,
                     const char *body, time_t now);

/* A message accepted through the API: its id, the credential's name, and
 * tags and metadata as JSON texts (may be NULL). 0 or -1. */
int api_store_message(struct api_store *s, const char *id, const char *cred, const char *tags,
                      const char *metadata, time_t now);
/* Looks one up: 0 with *cred, *tags, *metadata allocated (NULL when not
 * set), -1 when unknown. */
int api_store_message_get(struct api_store *s, const char *id, char **cred, char **tags,
                          char **metadata);

#endif
