/* libFuzzer target for the header work of sendmail -t (cli/sendmail_cmd.c,
 * sm_prepare_message): any bytes as a message. No crash; every recipient
 * found is a valid mailbox; no Bcc field is left in the header; the body is
 * untouched; a From field is there afterwards. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/sendmail.h"
#include "mail/addrlist.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the reader's form: CRLF lines */
    FILE *in = fmemopen((void *)data, size, "r");
    if (!in)
        return 0;
    struct sm_message m = {.from = strdup("sender@example.org")};
    CHECK(m.from);
    if (sm_read_message(in, false, &m) != 0) {
        fclose(in);
        sm_message_free(&m);
        return 0;
    }
    fclose(in);
    /* the body as the reader left it: after the first empty line */
    const char *sep = memmem(m.data, m.len, "\r\n\r\n", 4);
    size_t blen = sep ? m.len - (size_t)(sep - m.data) : 0;
    char *body = sep ? malloc(blen) : NULL;
    if (body)
        memcpy(body, sep, blen);
    if (sm_prepare_message(&m, true, "Name \"q\" \\") == SM_EX_OK) {
        for (size_t i = 0; i < m.nrcpts; i++) {
            struct addrlist one;
            char err[256];
            CHECK(addrlist_parse(m.rcpts[i], strlen(m.rcpts[i]), &one, err, sizeof err) == 0);
            CHECK(one.n == 1);
            addrlist_free(&one);
        }
        const char *end = memmem(m.data, m.len, "\r\n\r\n", 4);
        size_t hlen = end ? (size_t)(end - m.data) : m.len;
        CHECK(end || m.len == 0 || memmem(m.data, m.len, "\r\n", 2));
        for (size_t i = 0; i + 4 <= hlen; i++)
            if (i == 0 || m.data[i - 1] == '\n')
                CHECK(strncasecmp(m.data + i, "Bcc:", 4) != 0);
        if (body)
            CHECK(memmem(m.data, m.len, body, blen) != NULL);
        CHECK(m.len >= 5);
    }
    free(body);
    sm_message_free(&m);
    return 0;
}
