/* SMTP TLS Reporting (RFC 8460): the `_smtp._tls` TXT record that says
 * where a domain wants reports, and the aggregate reports themselves (the
 * JSON document and the email that carries it). check-domain checks the
 * record; the report parser reads what receivers send back. All pure. */
#ifndef SLUICE_MAILAUTH_TLSRPT_H
#define SLUICE_MAILAUTH_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLSRPT_VERSION "v=TLSRPTv1" /* RFC 8460 3 tlsrpt-version */

/* A parsed `_smtp._tls` record. */
struct tlsrpt_record {
    char **rua; /* mailto: and https: URIs, as written */
    size_t nrua;
};

/* true when txt starts with "v=TLSRPTv1" followed by ';', white space or
 * its end (other TXT records at the name are discarded). */
bool tlsrpt_record_is_tlsrpt(const char *txt, size_t len);

/* Parses one record: v=TLSRPTv1 first, then fields separated by ';'; rua=
 * required, a comma list of mailto: (with an address) or https: (with a
 * host) URIs; unknown extension fields ignored. Returns 0, -EINVAL (err
 * says why), -ENOMEM. *out is always initialised. */
int tlsrpt_record_parse(const char *txt, size_t len, struct tlsrpt_record *out, char *err,
                        size_t errlen);
void tlsrpt_record_clear(struct tlsrpt_record *r);

/* Exactly one TLSRPT record must be among the TXT strings (RFC 8460 3).
 * Returns 0, -ENOENT (none), -EINVAL (several / invalid), -ENOMEM. */
int tlsrpt_record_select(const char *const *txts, const size_t *lens, size_t n,
                         struct tlsrpt_record *out, char *err, size_t errlen);

/* ---- Aggregate reports (RFC 8460 4) ---------------------------------------- */

enum tlsrpt_policy_type {
    TLSRPT_POLICY_STS = 0,
    TLSRPT_POLICY_TLSA,
    TLSRPT_POLICY_NO_POLICY_FOUND,
    TLSRPT_POLICY_OTHER, /* a value the RFC does not define (seen in the field) */
};

struct tlsrpt_failure {
    char *result_type; /* "certificate-expired", "starttls-not-supported", ... */
    char *sending_mta_ip;
    char *receiving_mx_hostname; /* NULL when absent */
    char *receiving_ip;          /* NULL when absent */
    char *failure_reason_code;   /* NULL when absent */
    uint64_t failed_sessions;
};

struct tlsrpt_policy_result {
    enum tlsrpt_policy_type type;
    char *type_text;     /* policy-type as written */
    char *policy_domain; /* NULL when absent */
    char **policy_string;
    size_t npolicy_string;
    char **mx_host;
    size_t nmx_host;
    uint64_t successful, failed; /* summary counts (0 when absent) */
    struct tlsrpt_failure *failures;
    size_t nfailures;
};

struct tlsrpt_report {
    char *organization; /* NULL when absent */
    char *contact;      /* NULL when absent */
    char *report_id;
    char *start, *end; /* date-range, RFC 3339 text */
    struct tlsrpt_policy_result *policies;
    size_t npolicies;
};

/* Parses a report JSON document. report-id, date-range and a policies
 * array are required; the rest is read when present (reports in the field
 * leave out fields the RFC calls required). Returns 0, -EINVAL (err says
 * why), -ENOMEM. */
int tlsrpt_report_parse(const char *json, size_t len, struct tlsrpt_report *out, char *err,
                        size_t errlen);
void tlsrpt_report_clear(struct tlsrpt_report *r);

/* A report email (RFC 8460 5.3): multipart/report with report-type=tlsrpt
 * and one application/tlsrpt+gzip or application/tlsrpt+json part. */
struct tlsrpt_email {
    char *report_domain;    /* TLS-Report-Domain */
    char *report_submitter; /* TLS-Report-Submitter */
    char *filename;         /* of the report part, NULL when absent */
    bool gzip;              /* the payload is gzip-compressed */
    unsigned char *payload; /* transfer-decoded bytes of the report part */
    size_t payload_len;
};

/* Finds and decodes the report part. Returns 0, -EINVAL (not a TLS-RPT
 * report email; err says why), -ENOMEM. */
int tlsrpt_email_parse(const char *msg, size_t len, struct tlsrpt_email *out, char *err,
                       size_t errlen);
void tlsrpt_email_clear(struct tlsrpt_email *e);

/* The CRC-32 and size (mod 2^32) that a gzip member's trailer (RFC 1952
 * 2.3.1) records for its uncompressed data: lets a caller tie a compressed
 * payload to a document it has. Returns 0, or -EINVAL when data is not one
 * gzip member. */
int tlsrpt_gzip_trailer(const unsigned char *data, size_t len, uint32_t *crc32, uint32_t *isize);
/* CRC-32 as gzip computes it (ISO 3309, reflected 0xEDB88320). */
uint32_t tlsrpt_crc32(const void *data, size_t len);

#endif
