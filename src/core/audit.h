/* Audit log: an append-only file of security-relevant events (logins, policy
 * changes, queue control, TLS downgrades), one JSON object per line, chained
 * by hashes so that editing, removing or reordering records is detectable
 * with `sluice audit verify`. With a key the chain uses HMAC-SHA-256, so a
 * forger without the key cannot re-hash a changed record. */
#ifndef SLUICE_CORE_AUDIT_H
#define SLUICE_CORE_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One record is at most this long, so a resume reads a bounded tail. */
#define AUDIT_MAX_RECORD 65536
#define AUDIT_HASH_HEX 64
#define AUDIT_MAX_KEY 1024

struct audit;

/* Opens (creating, mode 0600) the audit file and resumes the chain from its
 * last record. A file that ends in a torn record (power loss mid-write) is cut
 * back to its last whole line, and the cut is itself recorded. An empty or
 * missing file whose rotated predecessor "<path>.1" exists continues that
 * chain. key_file NULL or "" keeps a plain SHA-256 chain. A background thread
 * syncs the file shortly after each append (see audit_append). Allocates;
 * NULL with err set on failure (including a last record that does not verify
 * under the configured key). */
struct audit *audit_open(const char *path, const char *key_file, char *err, size_t errlen);

/* Appends one record {"seq","ts","event","alg","prev"[,"prev_file"], fields...,
 * "hash"} with a single write(2) on an O_APPEND descriptor: when this returns
 * 0 the record survives a crash of the process; it reaches the disk through
 * fdatasync within milliseconds (group commit in the sync thread). When the
 * path was renamed (logrotate), a new file is started and its first record
 * names the old file in "prev_file". Takes ownership of `fields` (an object
 * or NULL); its keys may not be one of the record's own keys. Safe from
 * several threads. Returns 0, -EINVAL (bad fields), -E2BIG, or -errno. */
int audit_append(struct audit *a, const char *event, json_t *fields);

/* Forces what was appended to disk now. Returns 0 or -errno. */
int audit_sync(struct audit *a);

/* Last sequence number written (0 before the first record). */
uint64_t audit_seq(struct audit *a);

/* Syncs and closes. NULL is accepted. */
void audit_close(struct audit *a);

/* ---- verification ---- */

enum audit_problem {
    AUDIT_OK = 0,
    AUDIT_BAD_JSON,    /* not a JSON object with the record's fields */
    AUDIT_EDITED,      /* hash does not match the content (or wrong key) */
    AUDIT_REMOVED,     /* sequence numbers skip: records before this one are missing */
    AUDIT_REORDERED,   /* sequence numbers out of order */
    AUDIT_TRUNCATED,   /* last line cut short */
    AUDIT_BROKEN_LINK, /* prev does not match the previous record's hash */
    AUDIT_KEY_NEEDED,  /* keyed record but no key, or plain record under a key */
    AUDIT_IO_ERROR,
};

const char *audit_problem_name(enum audit_problem p);

/* Verification state and result; fill with audit_verify_init, feed files in
 * chain order (oldest first), read the fields. */
struct audit_verify {
    /* result */
    enum audit_problem problem;
    char file[512];     /* where the first problem is */
    unsigned long line; /* 1-based line in that file */
    long long seq;      /* seq of the bad record, -1 when unreadable */
    char detail[512];   /* human explanation */
    uint64_t records;   /* records verified */
    uint64_t first_seq, last_seq;
    char last_hash[AUDIT_HASH_HEX + 1];
    char continues_from[256]; /* first record continues a file not given */
    /* state */
    const unsigned char *key;
    size_t keylen;
    bool started;
};

/* key may be NULL (plain chain); it is borrowed until the last call. */
void audit_verify_init(struct audit_verify *v, const unsigned char *key, size_t keylen);

/* Checks one file's content, continuing the chain of earlier calls. Pure:
 * no I/O. Returns 0 while everything verifies, -1 at the first problem (the
 * result fields say which record and why; later calls do nothing). */
int audit_verify_buf(struct audit_verify *v, const char *name, const char *buf, size_t len);

/* Reads and verifies files in order. Returns 0 or -1 (see v->problem). */
int audit_verify_files(struct audit_verify *v, char *const *paths, size_t n);

#endif
