/* Intake header scan: any message bytes must yield a header end inside the
 * message and bounded added fields. */
#include "mail/intake.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct intake_info info = {.hostname = "relay.test",
                               .helo = "client.test",
                               .client_ip = "192.0.2.1",
                               .auth_user = "app",
                               .tls_desc = "TLSv1.3 TLS_AES_128_GCM_SHA256",
                               .queue_id = "0123456789abcdef",
                               .esmtp = true,
                               .now = 1700000000};
    struct intake_result r;
    intake_build((const char *)data, size, &info, &r);
    if (r.header_end > size || r.prepend_len >= sizeof r.prepend ||
        r.append_len >= sizeof r.append || strlen(r.message_id) >= sizeof r.message_id)
        abort();
    return 0;
}
