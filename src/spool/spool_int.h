/* Internals shared by the spool's files (spool.c: index, write path and
 * commit thread; spool_recover.c: reading segments at start; spool_compact.c:
 * reclaiming space). Nothing outside src/spool includes this. */
#ifndef SLUICE_SPOOL_SPOOL_INT_H
#define SLUICE_SPOOL_SPOOL_INT_H

#include "spool/spool.h"

#include <event2/util.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define REC_MAGIC 0x31524c53u /* "SLR1" little-endian */
#define REC_HDR_LEN 24
#define REC_MAX_LEN (1u << 30)
#define REC_MSG 1
#define REC_STATE 2
#define STATE_FIXED_LEN 16
#define SEG_TARGET_SIZE (64u << 20) /* default; spool_set_segment_size */
#define SPOOL_RETRY_MS 1000         /* an unrecorded state change is appended again this often */
#define SPOOL_OP_RESTORE 8          /* snapshot written when a message is copied forward */

struct segment {
    uint32_t seq;
    int fd;
    uint64_t size;           /* bytes appended */
    uint64_t synced;         /* bytes known durable */
    uint32_t live;           /* messages whose current copy lives here */
    uint64_t live_bytes;     /* the size of their records */
    uint64_t release_ticket; /* deletable once this ticket is durable */
    bool deleted;
    bool unreadable; /* could not be read at start: kept for the operator, never deleted */
    uint32_t pinned; /* records of a copy out of it wait to be appended: it must stay */
};

/* One record on its way to disk. The loop thread builds it; the writer
 * thread writes it, and the loop finishes it once durable. */
struct pending {
    struct pending *next;
    struct iovec iov[12];
    int n;
    size_t total;
    void *own[2]; /* buffers freed once written */
    uint64_t ticket;
    uint64_t id;
    int kind;         /* PENDING_MSG, PENDING_STATE, PENDING_COPY */
    bool ordered;     /* a state change or a bounce: retried in order until durable */
    bool waiting;     /* counted in spool.unrecorded */
    uint32_t pin_seg; /* part of a copy out of segment pin_seg - 1 (0: none) */
    size_t data_skip; /* message data's offset inside the record */
    int err;          /* set by the writer */
    uint32_t seg;     /* set by the writer: where it landed */
    uint64_t off;
    spool_done_fn cb;
    void *arg;
};

enum { PENDING_MSG = 1, PENDING_STATE, PENDING_COPY };

struct spool {
    char *dir;
    int dir_fd;
    struct event_base *base;

    /* shared with the writer thread, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t thread;
    bool stop;
    struct pending *q_head, *q_tail; /* waiting to be written */
    struct pending *d_head, *d_tail; /* written and synced (or failed) */
    bool dir_dirty;
    bool rotate_next;     /* a write hit a full disk */
    struct segment *segs; /* grows (under mu); index is stable */
    size_t n_segs, cap_segs;
    size_t cur; /* index of the segment being appended to (writer's) */
    uint64_t commits;
    uint64_t seg_target; /* start a new segment past this size */
    /* an ordered record failed: the writer refuses later ones (-EAGAIN)
     * until the loop hands them back in order, so none overtakes another */
    bool ordered_halt;

    int efd;
    struct event *wake_ev;

    /* loop thread only */
    uint64_t appended; /* ticket of the last record handed to the writer */
    uint64_t durable;  /* highest ticket finished */
    size_t inflight;   /* records handed over and not yet finished */
    size_t ordered_inflight;
    struct pending *r_head, *r_tail; /* ordered records not yet durable, in order */
    size_t unrecorded;               /* how many */
    struct event *retry_ev;
    uint32_t pin_next;                      /* pin_seg for the records sp_append_state makes next */
    uint64_t append_failures;               /* ordered records that failed to append */
    uint64_t damaged_ranges, damaged_bytes; /* found by recovery */
    uint64_t compact_bytes, compact_turns;

    struct spool_msg **buckets;
    size_t n_buckets, n_msgs;
    uint64_t next_id;
    uint64_t records;
};

/* ---- little-endian helpers ---- */

static inline void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* A message's record counts toward the segment holding its current copy. */
static inline void seg_hold(struct spool *s, uint32_t seg, const struct spool_msg *m)
{
    s->segs[seg].live++;
    s->segs[seg].live_bytes += m->rec_len;
}

static inline void seg_drop(struct spool *s, uint32_t seg, const struct spool_msg *m)
{
    struct segment *g = &s->segs[seg];
    if (g->live)
        g->live--;
    g->live_bytes = g->live_bytes > m->rec_len ? g->live_bytes - m->rec_len : 0;
}

struct spool_msg *sp_index_find(const struct spool *s, uint64_t id);
int sp_index_add(struct spool *s, struct spool_msg *m);
/* Unlinks m from the index and frees it. */
void sp_index_remove(struct spool *s, struct spool_msg *m);
/* Builds a message from a MSG record's envelope text (allocates). */
struct spool_msg *sp_envelope_parse(uint64_t id, const char *env, size_t len);
/* Returns true when the message is finished and must be dropped. */
bool sp_apply_state(struct spool_msg *m, int op, int32_t rcpt, int64_t when, uint8_t extra,
                    const char *reply, size_t reply_len);
/* Queues a state record; returns its ticket, 0 when out of memory. */
uint64_t sp_append_state(struct spool *s, uint64_t id, int op, int32_t rcpt, int64_t when,
                         uint8_t extra, const char *reply, spool_done_fn cb, void *arg);
/* Hands a record to the writer. Takes ownership of p. */
void sp_enqueue(struct spool *s, struct pending *p);

/* spool_writer.c: the record header, the writer thread and its
 * completions on the loop thread (finished records, retries). */
void sp_rec_header(unsigned char *h, uint8_t type, uint32_t len, uint64_t id);
void sp_pending_free(struct pending *p);
void *sp_writer_main(void *arg);
void sp_run_completions(struct spool *s);
bool sp_retry_unrecorded(struct spool *s);
void sp_on_retry(evutil_socket_t fd, short what, void *arg);
void sp_on_wake(evutil_socket_t fd, short what, void *arg);
int sp_seg_open(struct spool *s, uint32_t seq, bool create, int *fd_out);
int sp_seg_add(struct spool *s, uint32_t seq, int fd, uint64_t size);
int sp_seg_fd(struct spool *s, uint32_t i);
/* Reads every segment into the index (spool_recover.c). */
int sp_recover(struct spool *s, char *err, size_t errlen);

#endif
