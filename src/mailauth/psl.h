/* Public Suffix List: the registrable ("organizational", RFC 7489 §3.2)
 * domain of a name, used by DMARC for relaxed alignment and policy discovery.
 * Rules come from the list file Debian's `publicsuffix` package installs;
 * normal, wildcard ("*.") and exception ("!") rules are supported, and
 * Unicode labels are matched through their punycode (RFC 3492) form. */
#ifndef SLUICE_MAILAUTH_PSL_H
#define SLUICE_MAILAUTH_PSL_H

#include <stddef.h>

#define PSL_DEFAULT_PATH "/usr/share/publicsuffix/public_suffix_list.dat"

struct psl;

/* Parse list text (pure; comments "//" and blank lines skipped; the first
 * word of each line is a rule). NULL on out of memory or an empty list. */
struct psl *psl_new_from_text(const char *text, size_t len);
/* Read a list file; path NULL means PSL_DEFAULT_PATH (or env SLUICE_PSL_FILE). */
struct psl *psl_new_from_file(const char *path);
void psl_free(struct psl *psl);
size_t psl_rule_count(const struct psl *psl);

/* The registrable domain of name: the public suffix plus one label,
 * lower-cased (ASCII), in the form of the input (Unicode stays Unicode).
 * Returns 0 with the result in out, -ENOENT when the name is itself a
 * public suffix or invalid (empty label, leading dot), -ENOSPC when out is
 * too small. A trailing dot is ignored. */
int psl_registrable_domain(const struct psl *psl, const char *name, char *out, size_t size);

/* Punycode-encode one label (RFC 3492, with the "xn--" prefix when any
 * character is not ASCII; ASCII labels are copied lower-cased). Returns 0,
 * -EINVAL for invalid UTF-8, -ENOSPC. */
int psl_label_to_ascii(const char *label, size_t len, char *out, size_t size);

#endif
