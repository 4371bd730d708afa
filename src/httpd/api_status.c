/* SMTP refusal -> HTTP status. The reply code says permanent (5xx) or
 * temporary (4xx); the reason says which rule, which is what a client
 * program needs to decide between fixing the request and retrying it. */
#include "httpd/api_status.h"

#include <stdlib.h>
#include <string.h>

/* "try again in N s" in a rate refusal (policy/authz.c). */
static int wait_seconds(const char *reply)
{
    const char *p = strstr(reply, "try again in ");
    if (!p)
        return 0;
    long n = strtol(p + 13, NULL, 10);
    return n > 0 && n < 86400 ? (int)n : 0;
}

void api_status_from_refusal(const struct authz_refusal *ref, struct api_status *out)
{
    int smtp = atoi(ref->reply);
    *out = (struct api_status){smtp >= 500 ? 422 : 503, "refused", reject_reason_name(ref->reason),
                               smtp >= 500 ? 0 : 30};
    switch (ref->reason) {
    case REJECT_UNAUTHENTICATED:
        *out = (struct api_status){403, "credential_refused", "credential", 0};
        break;
    case REJECT_SENDER:
        *out = (struct api_status){403, "sender_not_allowed", "allow_from", 0};
        break;
    case REJECT_RECIPIENT:
        *out = (struct api_status){403, "recipient_not_allowed", "allow_rcpt", 0};
        break;
    case REJECT_HEADER_FROM:
        *out = (struct api_status){403, "header_from_not_allowed", "allow_from", 0};
        break;
    case REJECT_SIZE:
        *out = (struct api_status){413, "message_too_large", "max_size", 0};
        break;
    case REJECT_RECIPIENTS:
        *out = (struct api_status){422, "too_many_recipients", "max_recipients", 0};
        break;
    case REJECT_RATE:
        *out = (struct api_status){429, "rate_limited", "rate", wait_seconds(ref->reply)};
        if (!out->retry_after)
            out->retry_after = 1;
        break;
    case REJECT_QUOTA:
        *out = (struct api_status){429, "quota_exceeded", "quota", 3600};
        break;
    case REJECT_CONTENT:
        *out = (struct api_status){422, "content_refused", "content", 0};
        if (strstr(ref->reply, "required header"))
            out->rule = "required_headers";
        break;
    case REJECT_SMUGGLING:
        *out = (struct api_status){422, "bare_line_ending", "line_endings", 0};
        break;
    case REJECT_SYNTAX:
        *out = (struct api_status){422, "invalid_message", "syntax", 0};
        break;
    case REJECT_STORAGE:
    case REJECT_MEMORY:
        *out = (struct api_status){503, "temporarily_unavailable",
                                   ref->reason == REJECT_STORAGE ? "storage" : "memory", 30};
        break;
    case REJECT_SIGNING:
        *out = (struct api_status){503, "signing_failed", "dkim", 30};
        break;
    default:
        break;
    }
    /* a 4xx from a rule that is usually permanent (a store error) is still
     * temporary for the client */
    if (smtp >= 400 && smtp < 500 && out->status < 429) {
        out->status = 503;
        out->retry_after = 30;
    }
}

const char *api_status_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}
