/* libFuzzer target for the DMARC record parser: any byte string must parse
 * or fail cleanly, with values inside their documented ranges and ignored
 * tags counted, never fatal. */
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
        /* a bad tag is ignored, never fatal: at most one per ';' element */
        if (rec.psd > DMARC_PSD_NO || rec.np > DMARC_POLICY_REJECT || rec.nignored > size ||
            (rec.testing && !rec.t_given) || (rc == 0 && rec.p == DMARC_POLICY_UNSET))
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
