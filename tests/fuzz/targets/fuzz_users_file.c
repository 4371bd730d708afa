/* Fuzz target: the retired users file that `sluice creds import` reads. A
 * parse either fails with a message or yields users whose names are valid
 * credential names, listed once, with argon2id hashes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/creds_import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct users_line *v = NULL;
    size_t n = 0;
    char err[256] = "";
    int rc = users_file_parse((const char *)data, size, &v, &n, err, sizeof err);
    if (rc < 0 && (!err[0] || v || n))
        __builtin_trap();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!cred_name_valid(v[i].name) || strncmp(v[i].hash, "$argon2id$", 10) != 0 ||
            strchr(v[i].hash, '\n'))
            __builtin_trap();
        for (size_t j = 0; j < i; j++)
            if (strcmp(v[i].name, v[j].name) == 0)
                __builtin_trap();
    }
    free(v);
    return 0;
}
