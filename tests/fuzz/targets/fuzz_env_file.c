/* Fuzz target: the value a SLUICE_*_FILE file holds. Either a message, or a
 * value no longer than the input without NUL or line breaks. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/env_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[128] = "";
    long n = env_file_value((const char *)data, size, err, sizeof err);
    if (n < 0) {
        if (!err[0])
            __builtin_trap();
        return 0;
    }
    if ((size_t)n > size || memchr(data, '\0', (size_t)n) || memchr(data, '\n', (size_t)n) ||
        memchr(data, '\r', (size_t)n))
        __builtin_trap();
    return 0;
}
