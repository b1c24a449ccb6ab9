/* crc32: the CRC-32 of zlib, gzip and PNG (reflected, 0xEDB88320). */
#ifndef CRC32_H
#define CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Start with crc = 0; feed the result back in to continue. */
uint32_t crc32_update(uint32_t crc, const void *data, size_t n);

#endif
