/* Recovery: at start every segment is read and its records replayed into
 * the in-memory index; see docs/SPOOL.md for what is cut, skipped and
 * quarantined. */
#include "spool/spool_int.h"

#include "core/crc32c.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- recovery ---- */

/* The length of the valid record at buf[off], or 0: magic, type, a length
 * that fits, and the CRC-32C over everything after the CRC field. */
static size_t record_at(const unsigned char *buf, size_t len, size_t off)
{
    if (len - off < REC_HDR_LEN)
        return 0;
    const unsigned char *h = buf + off;
    uint32_t rl = get32(h + 8);
    if (get32(h) != REC_MAGIC || rl > REC_MAX_LEN || rl > len - off - REC_HDR_LEN)
        return 0;
    if (h[12] != REC_MSG && h[12] != REC_STATE)
        return 0;
    if (crc32c(0, h + 8, REC_HDR_LEN - 8 + (size_t)rl) != get32(h + 4))
        return 0;
    return REC_HDR_LEN + (size_t)rl;
}

size_t spool_scan_records(const unsigned char *buf, size_t len, size_t *n_records)
{
    size_t off = 0, n = 0, rl;
    while ((rl = record_at(buf, len, off)) > 0) {
        off += rl;
        n++;
    }
    if (n_records)
        *n_records = n;
    return off;
}

size_t spool_scan_segment(const unsigned char *buf, size_t len, spool_scan_fn fn, void *arg)
{
    static const unsigned char magic[4] = {'S', 'L', 'R', '1'};
    size_t off = 0, n = 0;
    while (off < len) {
        size_t rl = record_at(buf, len, off);
        if (rl) {
            fn(arg, SPOOL_SCAN_RECORD, off, rl);
            off += rl;
            n++;
            continue;
        }
        /* resynchronise: the next offset where a whole valid record starts */
        size_t next = off + 1;
        for (;;) {
            const unsigned char *hit =
                next < len ? memmem(buf + next, len - next, magic, sizeof magic) : NULL;
            if (!hit) {
                next = len;
                break;
            }
            next = (size_t)(hit - buf);
            if (record_at(buf, len, next))
                break;
            next++;
        }
        fn(arg, next < len ? SPOOL_SCAN_DAMAGED : SPOOL_SCAN_TAIL, off, next - off);
        off = next;
    }
    return n;
}

/* Reads the whole file; a read error leaves the rest unread: *len says how
 * far it got, *size how long the file is. */
static int read_all(int fd, unsigned char **out, size_t *len, size_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf)
        return -ENOMEM;
    size_t got = 0;
    int err = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            err = r < 0 ? -errno : 0;
            break;
        }
        got += (size_t)r;
    }
    *out = buf;
    *len = got;
    *size = n;
    return err;
}

static void replay_record(struct spool *s, size_t si, const unsigned char *h, size_t off)
{
    uint32_t rl = get32(h + 8);
    uint64_t id = get64(h + 16);
    const unsigned char *p = h + REC_HDR_LEN;
    if (h[12] == REC_MSG && rl >= 4) {
        uint32_t el = get32(p);
        if (el <= rl - 4) {
            struct spool_msg *m = sp_envelope_parse(id, (const char *)p + 4, el);
            if (m) {
                struct spool_msg *old = sp_index_find(s, id);
                if (old)
                    sp_index_remove(s, old);
                m->seg_index = (uint32_t)si;
                m->rec_off = off;
                m->rec_len = REC_HDR_LEN + rl;
                m->data_off = off + REC_HDR_LEN + 4 + el;
                m->data_len = rl - 4 - el;
                m->next_attempt = m->received;
                m->committed = true;
                seg_hold(s, (uint32_t)si, m);
                sp_index_add(s, m);
            }
        }
        if (id >= s->next_id)
            s->next_id = id + 1;
    } else if (h[12] == REC_STATE && rl >= STATE_FIXED_LEN) {
        struct spool_msg *m = sp_index_find(s, id);
        if (m) {
            size_t reply_len = (size_t)p[2] | (size_t)p[3] << 8;
            if (reply_len > rl - STATE_FIXED_LEN)
                reply_len = rl - STATE_FIXED_LEN;
            if (sp_apply_state(m, p[0], (int32_t)get32(p + 4), (int64_t)get64(p + 8), p[1],
                               (const char *)p + STATE_FIXED_LEN, reply_len))
                sp_index_remove(s, m);
        }
    }
    s->records++;
}

static void seg_name(uint32_t seq, char *buf, size_t len)
{
    snprintf(buf, len, "seg-%08" PRIx32 ".log", seq);
}

/* Copies a damaged byte range to quarantine/seg-NNNNNNNN.OFFSET.bad so that
 * nothing is thrown away. Returns 1 when the file was created now, 0 when
 * an earlier start already made it, -errno on failure. */
static int quarantine(struct spool *s, uint32_t seq, const unsigned char *bytes, size_t off,
                      size_t len, char *path, size_t pathlen)
{
    char name[80];
    snprintf(name, sizeof name, "seg-%08" PRIx32 ".%zu.bad", seq, off);
    snprintf(path, pathlen, "%s/quarantine/%s", s->dir, name);
    if (mkdirat(s->dir_fd, "quarantine", 0700) < 0 && errno != EEXIST)
        return -errno;
    int qd = openat(s->dir_fd, "quarantine", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (qd < 0)
        return -errno;
    int fd = openat(qd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        close(qd);
        return e == EEXIST ? 0 : -e;
    }
    int err = 0;
    for (size_t done = 0; done < len && !err;) {
        ssize_t w = write(fd, bytes + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            err = w < 0 ? -errno : -ENOSPC;
        else
            done += (size_t)w;
    }
    if (!err && fsync(fd) < 0)
        err = -errno;
    close(fd);
    if (!err && fsync(qd) < 0)
        err = -errno;
    if (err)
        unlinkat(qd, name, 0); /* a partial copy would be mistaken for a whole one later */
    close(qd);
    return err ? err : 1;
}

/* Reports bytes that recovery could not use: the spool.damaged event and the
 * counters behind sluice_spool_damaged_*. bytes NULL: unreadable, nothing to
 * copy. */
static void report_damage(struct spool *s, uint32_t seq, const unsigned char *bytes, size_t off,
                          size_t len, const char *reason)
{
    char name[64], path[1200] = "";
    seg_name(seq, name, sizeof name);
    int q = bytes ? quarantine(s, seq, bytes + off, off, len, path, sizeof path) : -ENOENT;
    s->damaged_ranges++;
    s->damaged_bytes += len;
    log_event(LOG_ERROR, "spool.damaged", "segment", "%s", name, "offset", "#%zu", off, "length",
              "#%zu", len, "reason", "%s", reason, "quarantine", "%s", q >= 0 ? path : "",
              "first_seen", "#%s", q == 0 ? "false" : "true", "quarantine_error", "%s",
              q < 0 && bytes ? strerror(-q) : "", NULL);
}

struct seg_scan {
    struct spool *s;
    size_t si;
    uint32_t seq;
    const unsigned char *buf;
    bool newest;
    size_t torn_at; /* where a torn tail starts, or SIZE_MAX */
};

static void on_scanned(void *arg, enum spool_scan_kind kind, size_t off, size_t len)
{
    struct seg_scan *c = arg;
    if (kind == SPOOL_SCAN_RECORD)
        replay_record(c->s, c->si, c->buf + off, off);
    else if (kind == SPOOL_SCAN_TAIL && c->newest)
        c->torn_at = off; /* the write in progress at the crash: never acknowledged */
    else
        /* a bad range with valid records after it, or at the end of a
         * segment that was finished before the crash: acknowledged data
         * was damaged, and only this range is lost */
        report_damage(c->s, c->seq, c->buf, off, len,
                      kind == SPOOL_SCAN_TAIL ? "bad tail of a finished segment" : "bad record");
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Keeps a segment that could not be opened or read in the list, so that its
 * number is not reused and compaction never deletes it. */
static void add_unreadable(struct spool *s, uint32_t seq, int fd, size_t size, int err)
{
    char name[64];
    seg_name(seq, name, sizeof name);
    s->damaged_ranges++;
    s->damaged_bytes += size;
    log_event(LOG_ERROR, "spool.damaged", "segment", "%s", name, "offset", "#%d", 0, "length",
              "#%zu", size, "reason", "%s", "unreadable segment", "error", "%s", strerror(-err),
              NULL);
    if (sp_seg_add(s, seq, fd, size) == 0)
        s->segs[s->n_segs - 1].unreadable = true;
    else if (fd >= 0)
        close(fd);
}

static void recover_one(struct spool *s, uint32_t seq, bool newest)
{
    int fd = -1;
    int r = sp_seg_open(s, seq, false, &fd);
    if (r < 0) {
        struct stat st;
        char name[64];
        seg_name(seq, name, sizeof name);
        size_t size = fstatat(s->dir_fd, name, &st, 0) == 0 ? (size_t)st.st_size : 0;
        add_unreadable(s, seq, -1, size, r);
        return;
    }
    unsigned char *buf = NULL;
    size_t len = 0, size = 0;
    r = read_all(fd, &buf, &len, &size);
    if (r == -ENOMEM || (r < 0 && len == 0)) {
        free(buf);
        add_unreadable(s, seq, fd, size, r);
        return;
    }
    if (sp_seg_add(s, seq, fd, size) < 0) {
        free(buf);
        close(fd);
        return;
    }
    struct seg_scan c = {s, s->n_segs - 1, seq, buf, newest && len == size, SIZE_MAX};
    spool_scan_segment(buf, len, on_scanned, &c);
    if (len < size)
        report_damage(s, seq, NULL, len, size - len, "unreadable bytes");
    if (c.torn_at != SIZE_MAX) {
        char name[64];
        seg_name(seq, name, sizeof name);
        log_event(LOG_WARN, "spool.torn_tail", "segment", "%s", name, "offset", "#%zu", c.torn_at,
                  "length", "#%zu", len - c.torn_at, NULL);
        if (ftruncate(fd, (off_t)c.torn_at) == 0)
            fdatasync(fd);
        struct segment *g = &s->segs[s->n_segs - 1];
        g->size = g->synced = c.torn_at;
    }
    free(buf);
}

int sp_recover(struct spool *s, char *err, size_t errlen)
{
    DIR *d = fdopendir(dup(s->dir_fd));
    if (!d) {
        snprintf(err, errlen, "cannot list spool directory %s: %s", s->dir, strerror(errno));
        return -1;
    }
    uint32_t *seqs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned int seq;
        char tail[8];
        if (sscanf(de->d_name, "seg-%8x.%4s", &seq, tail) == 2 && strcmp(tail, "log") == 0) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                uint32_t *ns = realloc(seqs, nc * sizeof *ns);
                if (!ns) {
                    closedir(d);
                    free(seqs);
                    snprintf(err, errlen, "out of memory listing the spool");
                    return -1;
                }
                seqs = ns;
                cap = nc;
            }
            seqs[n++] = seq;
        }
    }
    closedir(d);
    if (n)
        qsort(seqs, n, sizeof *seqs, cmp_u32);
    for (size_t i = 0; i < n; i++) {
        /* segments are deleted oldest first, so a gap between two present
         * ones is a segment lost outside Sluice */
        for (uint32_t gap = i ? seqs[i - 1] + 1 : seqs[i]; gap < seqs[i]; gap++) {
            char name[64];
            seg_name(gap, name, sizeof name);
            s->damaged_ranges++;
            log_event(LOG_ERROR, "spool.damaged", "segment", "%s", name, "offset", "#%d", 0,
                      "length", "#%d", 0, "reason", "%s", "missing segment", NULL);
        }
        recover_one(s, seqs[i], i == n - 1);
    }
    free(seqs);
    return 0;
}
