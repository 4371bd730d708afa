/* Spool record scanner: any bytes (a corrupt or torn segment) must be
 * scanned without reading past the buffer, and the valid prefix must
 * rescan to itself. */
#include "spool/spool.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n1, n2;
    size_t valid = spool_scan_records(data, size, &n1);
    if (valid > size)
        abort();
    if (spool_scan_records(data, valid, &n2) != valid || n1 != n2)
        abort();
    return 0;
}
