/* CRC-32C (Castagnoli), used to detect torn or corrupt spool records. */
#ifndef SLUICE_CORE_CRC32C_H
#define SLUICE_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC: start with crc = 0. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif
