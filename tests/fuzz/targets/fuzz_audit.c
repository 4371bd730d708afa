/* Fuzz target: the audit chain verifier over arbitrary file content, as
 * `sluice audit verify` reads it. The first byte picks plain or keyed mode;
 * the rest is split at the first NUL into two files of one chain. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const unsigned char key[] = "fuzz-key";
    bool keyed = data[0] & 1;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    const char *nul = memchr(buf, '\0', len);
    size_t first = nul ? (size_t)(nul - buf) : len;

    struct audit_verify v;
    audit_verify_init(&v, keyed ? key : NULL, keyed ? sizeof key - 1 : 0);
    int rc = audit_verify_buf(&v, "a", buf, first);
    if (rc == 0 && nul)
        rc = audit_verify_buf(&v, "b", nul + 1, len - first - 1);
    /* The result must be consistent whatever the input. */
    if ((rc == 0) != (v.problem == AUDIT_OK))
        __builtin_trap();
    if (rc == 0 && v.records && v.last_seq < v.first_seq)
        __builtin_trap();
    return 0;
}
