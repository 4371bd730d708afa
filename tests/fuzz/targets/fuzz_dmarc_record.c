/* libFuzzer target for the DMARC record parser: any byte string must parse
 * or fail cleanly, with values inside their documented ranges. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mailauth/dmarc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dmarc_record rec;
    struct dmarc_parse_error err;
    int rc = dmarc_record_parse((const char *)data, size, &rec, &err);
    if (rc == 0 || rc == DMARC_E_POLICY) {
        if (rec.pct > 100 || memchr(rec.fo, '\0', sizeof rec.fo) == NULL)
            abort();
        for (size_t i = 0; i < rec.nrua; i++)
            if (!rec.rua[i])
                abort();
    } else if (memchr(err.message, '\0', sizeof err.message) == NULL) {
        abort();
    }
    dmarc_record_clear(&rec);
    return 0;
}
