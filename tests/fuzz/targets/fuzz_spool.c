/* Spool segment scanners: any bytes (a corrupt or torn segment) must be
 * scanned without reading past the buffer; the valid prefix must rescan to
 * itself; the resynchronising scan must cover the buffer exactly with
 * records and bad ranges, each record valid on its own, and never report
 * two bad ranges in a row or a tail that is not last. */
#include "spool/spool.h"

#include <stdint.h>
#include <stdlib.h>

struct walk {
    const uint8_t *buf;
    size_t len, at, records;
    int last_kind;
    int tails;
};

static void on_item(void *arg, enum spool_scan_kind kind, size_t off, size_t len)
{
    struct walk *w = arg;
    if (off != w->at || len == 0 || len > w->len - off || w->tails)
        abort();
    if (kind == SPOOL_SCAN_RECORD) {
        size_t n;
        if (spool_scan_records(w->buf + off, len, &n) != len || n != 1)
            abort();
        w->records++;
    } else {
        if (w->last_kind != -1 && w->last_kind != SPOOL_SCAN_RECORD)
            abort(); /* a resync always ends on a record */
        if (kind == SPOOL_SCAN_TAIL)
            w->tails++;
        else if (off + len >= w->len)
            abort();
    }
    w->last_kind = (int)kind;
    w->at = off + len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n1, n2;
    size_t valid = spool_scan_records(data, size, &n1);
    if (valid > size)
        abort();
    if (spool_scan_records(data, valid, &n2) != valid || n1 != n2)
        abort();
    struct walk w = {data, size, 0, 0, -1, 0};
    size_t n = spool_scan_segment(data, size, on_item, &w);
    if (w.at != size || n != w.records || n < n1)
        abort();
    return 0;
}
