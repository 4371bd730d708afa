/* Fuzz target: one line of a `sluice queue export` file, the input `sluice
 * queue import` trusts least. A parse fails with a message, or yields a
 * message whose envelope holds no control byte (it becomes spool text
 * lines) and whose states are in range. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "queue/transfer.h"
#include "spool/spool.h"

static void check_clean(const char *s, int newlines_ok)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && !(newlines_ok && *s == '\n')) || *s == 0x7f)
            __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct transfer_msg m;
    long long trailer;
    char err[256] = "";
    int rc = transfer_parse_line((const char *)data, size, &m, &trailer, err, sizeof err);
    if (rc < 0 && !err[0])
        __builtin_trap();
    if (rc != 0)
        return 0;
    if (m.n_rcpts == 0 || m.state < SPOOL_MSG_ACTIVE || m.state > SPOOL_MSG_DEAD)
        __builtin_trap();
    check_clean(m.sender, 0);
    for (uint32_t i = 0; i < m.n_rcpts; i++) {
        check_clean(m.rcpts[i], 0);
        if (!m.rcpts[i][0] || m.rcpt_state[i] > SPOOL_RCPT_FAILED)
            __builtin_trap();
    }
    if (m.meta)
        check_clean(m.meta, 1);
    if (m.last_reply)
        check_clean(m.last_reply, 0);
    transfer_msg_free(&m);
    return 0;
}
