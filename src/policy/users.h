/* The submission users file: one "name:$argon2id$..." line per user. Loaded
 * at start and on SIGHUP; checked off the event loop (argon2 is slow on
 * purpose). A later credential store replaces this file. */
#ifndef SLUICE_POLICY_USERS_H
#define SLUICE_POLICY_USERS_H

#include <stdbool.h>
#include <stddef.h>

struct users;

/* Loads path; a missing file gives an empty set (AUTH always fails). Returns
 * NULL with err set on a malformed file ("users:3: ..."). */
struct users *users_load(const char *path, char *err, size_t errlen);
/* Takes one more reference; users_free drops one. */
struct users *users_ref(struct users *u);
void users_free(struct users *u);
size_t users_count(const struct users *u);

/* Verifies a password. Takes about as long for an unknown user as for a known
 * one, so timing does not reveal which names exist. Thread-safe. */
bool users_verify(const struct users *u, const char *name, const char *password);

/* Hashes a password as argon2id into out (>= 128 bytes). Returns 0 or -1. */
int users_hash_password(const char *password, char *out, size_t out_size);

#endif
