/* libFuzzer target for the sendmail outbox file (cli/sendmail_outbox.c):
 * any bytes as a file. No crash; what parses is written back by the
 * formatter and parses again to the same envelope and message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/sendmail.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sm_message m, again;
    if (sm_outbox_parse((const char *)data, size, &m) != 0)
        return 0;
    CHECK(m.from && m.nrcpts > 0 && m.data);
    size_t len = 0;
    char *text = sm_outbox_format(&m, &len);
    CHECK(text);
    CHECK(len == size && memcmp(text, data, size) == 0);
    CHECK(sm_outbox_parse(text, len, &again) == 0);
    CHECK(strcmp(again.from, m.from) == 0 && again.nrcpts == m.nrcpts && again.len == m.len);
    for (size_t i = 0; i < m.nrcpts; i++)
        CHECK(strcmp(again.rcpts[i], m.rcpts[i]) == 0);
    CHECK(memcmp(again.data, m.data, m.len) == 0);
    free(text);
    sm_message_free(&again);
    sm_message_free(&m);
    return 0;
}
