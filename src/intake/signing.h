/* The DKIM signers of the running daemon: every active key in the key
 * directory, grouped by domain. Loaded at start and on SIGHUP (key rotation
 * without restart); a transaction in progress keeps the set it began with. */
#ifndef SLUICE_INTAKE_SIGNING_H
#define SLUICE_INTAKE_SIGNING_H

#include <stddef.h>

struct config;
struct dkim_signer;
struct signing;

/* Loads the keys named SELECTOR._domainkey.DOMAIN.key in cfg->dkim_key_dir
 * (only those listed in cfg->dkim_selectors when it is set). A missing
 * directory is an empty set. Returns NULL with err set when a listed or
 * present key cannot be used. */
struct signing *signing_load(const struct config *cfg, char *err, size_t errlen);

struct signing *signing_ref(struct signing *s);
void signing_free(struct signing *s); /* drops one reference */

/* The signers for a From domain (case-insensitive), at most max. */
size_t signing_for_domain(struct signing *s, const char *domain, struct dkim_signer **out,
                          size_t max);

size_t signing_count(const struct signing *s);

/* The Author Domain of the header block (mime_from_domains: exactly one From
 * field; the first domain when its mailboxes name several), lower-cased, into
 * out; returns 0, or -1 when there is none. */
int signing_from_domain(const char *headers, size_t len, char *out, size_t outlen);

#endif
