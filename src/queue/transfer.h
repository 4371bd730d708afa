/* Moving queued mail between nodes: `sluice queue export` writes the messages
 * of a stopped node's spool to a file, one JSON object per line (envelope,
 * recipient states, message state, data in base64), and `sluice queue
 * import` adds them to another spool, through the running daemon's control
 * socket or, with no daemon, directly. docs/DEPLOY.md has the procedure. */
#ifndef SLUICE_QUEUE_TRANSFER_H
#define SLUICE_QUEUE_TRANSFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct spool;
struct queue;

/* First line of an export file: {"sluice_queue_export":1,...}. */
#define TRANSFER_FORMAT 1
/* Metadata line an imported message carries: the id it had where it was
 * exported, so that importing the same file again adds nothing twice. */
#define TRANSFER_META_KEY "imported_from"

/* One message of an export file. */
struct transfer_msg {
    uint64_t id; /* id in the exporting spool */
    char *sender;
    char **rcpts;
    uint8_t *rcpt_state; /* enum spool_rcpt_state */
    uint32_t n_rcpts;
    uint32_t flags;
    int64_t received;
    char *meta; /* may be NULL */
    int state;  /* enum spool_msg_state */
    char *last_reply;
    unsigned char *data;
    size_t data_len;
};

/* Writes the header line and one line per message of s to f, then a
 * trailer {"end":N}. Returns 0 with *n messages written, or -1 with err. */
int transfer_export(struct spool *s, FILE *f, size_t *n, char *err, size_t errlen);

/* Parses one message line (len bytes, no line end). Pure. Returns 0 with *m
 * filled (free with transfer_msg_free), 1 for the header or trailer line
 * (*trailer_count set for a trailer, else -1), or -1 with err naming the
 * problem: bad JSON, a missing field, a recipient or sender with line breaks
 * or control bytes, states out of range, bad base64. */
int transfer_parse_line(const char *line, size_t len, struct transfer_msg *m,
                        long long *trailer_count, char *err, size_t errlen);

void transfer_msg_free(struct transfer_msg *m);

/* Outcome of an import. */
struct transfer_result {
    size_t imported, skipped; /* skipped: imported before (same source id) */
    char error[512];          /* empty when the whole file was imported */
};

typedef void (*transfer_done_fn)(void *arg, const struct transfer_result *res);

/* Imports the file at path into s, one message at a time: each gets a new
 * id, its recipients' and its own state (held, dead) are recorded, and (with
 * q) an active one is scheduled. done runs once every record is durable, or
 * at the first error (what was imported before it stays; importing the file
 * again skips it). A file without its trailer is refused at the end, after
 * the complete lines it has. done may run before this returns (a file with
 * nothing to import). Returns 0, or -1 with err (file unreadable). */
int transfer_import(struct spool *s, struct queue *q, const char *path, transfer_done_fn done,
                    void *arg, char *err, size_t errlen);

#endif
