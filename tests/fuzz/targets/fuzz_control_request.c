/* Fuzz target: control socket request lines, as the daemon reads them from
 * a local client. A parse either fails with a message or yields a request
 * whose fields are within their ranges. */
#include <stddef.h>
#include <stdint.h>

#include "queue/control_request.h"
#include "spool/spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct control_request r;
    const char *err = NULL;
    int rc = control_request_parse((const char *)data, size, &r, &err);
    if (rc < 0 && !err)
        __builtin_trap();
    if (rc == 0) {
        if (r.verb > CONTROL_IMPORT)
            __builtin_trap();
        /* an import names an absolute path inside the request line */
        if (r.verb == CONTROL_IMPORT && (r.path_len == 0 || r.path_off + r.path_len > size ||
                                         data[r.path_off] != '/' || r.path_len > CONTROL_PATH_MAX))
            __builtin_trap();
        if (r.state != CONTROL_STATE_ANY &&
            (r.state < SPOOL_MSG_ACTIVE || r.state > SPOOL_MSG_DEAD))
            __builtin_trap();
        if (r.dead && !(r.verb == CONTROL_RETRY && r.all))
            __builtin_trap();
    }
    return 0;
}
