/* The spool: Sluice's durable message store. Messages and their state changes
 * are appended as checksummed records to segment files; a commit thread makes
 * many appends durable with one fdatasync (group commit) and only then are
 * callers told, so `250` is never sent for a message that a crash could lose.
 * The format is described in docs/SPOOL.md. */
#ifndef SLUICE_SPOOL_SPOOL_H
#define SLUICE_SPOOL_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct event_base;
struct spool;

/* Envelope flags. */
#define SPOOL_F_SMTPUTF8 0x1u /* MAIL carried SMTPUTF8 */
#define SPOOL_F_8BIT 0x2u     /* body has 8-bit octets */
#define SPOOL_F_BOUNCE 0x4u   /* a DSN made by Sluice: never bounced itself */

enum spool_rcpt_state { SPOOL_RCPT_PENDING = 0, SPOOL_RCPT_DELIVERED = 1, SPOOL_RCPT_FAILED = 2 };

enum spool_msg_state {
    SPOOL_MSG_ACTIVE = 0, /* waiting for its next attempt */
    SPOOL_MSG_HELD = 1,   /* held by an operator or by upstream trouble */
    SPOOL_MSG_DEAD = 2,   /* failed for good; kept for inspection and retry */
};

/* State-change operations recorded by spool_mark. */
enum spool_op {
    SPOOL_OP_RCPT_DELIVERED = 1, /* rcpt = index */
    SPOOL_OP_RCPT_FAILED = 2,    /* rcpt = index */
    SPOOL_OP_DEFER = 3,          /* attempts+1, next attempt at `when` */
    SPOOL_OP_HOLD = 4,
    SPOOL_OP_RELEASE = 5, /* held or dead -> active, due at `when` */
    SPOOL_OP_DEAD = 6,
    SPOOL_OP_DELETE = 7, /* removed by an operator */
};

struct spool_envelope {
    const char *sender; /* "" for the null reverse-path */
    const char *const *rcpts;
    size_t n_rcpts;
    uint32_t flags;   /* SPOOL_F_* */
    int64_t received; /* unix seconds */
    const char *meta; /* "key=value" lines (auth, client, tls...) or NULL */
};

/* A queued message as the spool knows it (read-only for callers). */
struct spool_msg {
    uint64_t id;
    char *sender;
    char **rcpts;
    uint8_t *rcpt_state; /* enum spool_rcpt_state per recipient */
    uint32_t n_rcpts;
    uint32_t flags;
    int64_t received;
    char *meta;
    enum spool_msg_state state;
    uint32_t attempts;
    int64_t next_attempt; /* unix seconds */
    char *last_reply;     /* last delivery outcome text, or NULL */
    uint32_t data_len;
    /* private */
    uint32_t seg_index, rec_len;
    uint64_t rec_off, data_off;
    bool committed, copying;
    uint64_t copy_release; /* ticket after which the old copy's segment may go */
    struct spool_msg *hash_next;
};

/* Completion of a put or mark: err 0 when durable, negative errno otherwise. */
typedef void (*spool_done_fn)(void *arg, int err, uint64_t id);

struct spool_stats {
    uint64_t messages, active, held, dead, segments, bytes, commits, records;
    int64_t oldest_received;
    uint64_t damaged_ranges, damaged_bytes; /* found by recovery at this start */
    uint64_t compact_bytes, compact_turns;  /* copied forward; compaction runs */
    uint64_t unrecorded;                    /* state changes and bounces not yet durable */
    uint64_t append_failures;               /* appends of those that failed (and were retried) */
};

/* Opens (creating if needed) the spool in `dir` and recovers every message
 * whose record is complete; torn tails are cut off. The commit thread
 * notifies the caller's event loop `base`. Returns 0 or -1 with err set. */
int spool_open(const char *dir, struct event_base *base, struct spool **out, char *err,
               size_t errlen);

/* Segments are started anew past this size (default 64 MiB). */
void spool_set_segment_size(struct spool *s, uint64_t bytes);

/* Waits for pending commits, stops the commit thread, closes files. */
void spool_close(struct spool *s);

/* A fresh message id, unique across restarts. */
uint64_t spool_new_id(struct spool *s);

/* Queues a message for the writer thread. `data` is the full message
 * (headers + body, CRLF); its buffers are borrowed and must stay unchanged
 * until cb runs. Returns 0 (cb then runs exactly once: err 0 when durable,
 * or a negative errno — -ENOSPC when the disk is full — and then nothing is
 * kept), or a negative errno at once for bad arguments or lack of memory.
 * A bounce (SPOOL_F_BOUNCE) is never dropped: a failed append is retried
 * like a state change, and cb runs once it is durable. */
int spool_put(struct spool *s, uint64_t id, const struct spool_envelope *env,
              const struct iovec *data, int n_data, spool_done_fn cb, void *arg);

/* Records a state change; the in-memory view changes at once, cb runs when
 * the change is durable. An append that fails is retried, in order, until it
 * is (see spool_unrecorded). Returns 0 or a negative errno (unknown id:
 * -ENOENT). */
int spool_mark(struct spool *s, uint64_t id, enum spool_op op, int rcpt, int64_t when,
               const char *reply, spool_done_fn cb, void *arg);

/* State changes and bounces whose append failed (a full disk) and that wait,
 * in order, to be appended again; their callbacks run once they are durable.
 * While non-zero the spool is not ready (/readyz) and raises an alert. */
size_t spool_unrecorded(const struct spool *s);

/* Looks up a committed message, or NULL. */
const struct spool_msg *spool_get(struct spool *s, uint64_t id);

/* Calls fn for every committed message (order unspecified). */
void spool_foreach(struct spool *s, void (*fn)(void *arg, const struct spool_msg *m), void *arg);

/* Reads a message's data into a malloc'ed buffer (caller frees). 0 or -errno. */
int spool_read(struct spool *s, uint64_t id, char **data, size_t *len);

/* Drops fully-finished segments and copies live messages out of the oldest
 * segment when it pins too much disk. Cheap; call it from a timer. */
void spool_compact(struct spool *s);

void spool_get_stats(struct spool *s, struct spool_stats *st);

/* Formats an id as 16 hex digits into buf (>= 17 bytes); returns buf. */
char *spool_id_str(uint64_t id, char *buf);
int spool_id_parse(const char *s, uint64_t *id);

/* Message metadata ("key=value" lines, see spool_envelope.meta): copies the
 * value of key into out; returns 0, or -1 when absent. */
int spool_meta_get(const char *meta, const char *key, char *out, size_t outlen);

/* The metadata as a JSON object (allocates; the caller decrefs). */
struct json_t *spool_meta_json(const char *meta);

/* Exposed for tests and fuzzing: checks a buffer of records, returns the
 * length of its valid prefix. */
size_t spool_scan_records(const unsigned char *buf, size_t len, size_t *n_records);

enum spool_scan_kind {
    SPOOL_SCAN_RECORD,  /* a valid record */
    SPOOL_SCAN_DAMAGED, /* bad bytes with a valid record after them */
    SPOOL_SCAN_TAIL,    /* bad bytes up to the end of the buffer */
};
typedef void (*spool_scan_fn)(void *arg, enum spool_scan_kind kind, size_t off, size_t len);

/* Walks a segment image (pure: no I/O). fn is called for every valid record
 * and every bad range, in order; together they cover buf exactly. After a
 * bad spot the scan resynchronises on the next offset where a whole valid
 * record (magic, type, length, CRC) starts. Returns the number of records. */
size_t spool_scan_segment(const unsigned char *buf, size_t len, spool_scan_fn fn, void *arg);

#endif
