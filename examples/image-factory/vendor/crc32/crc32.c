#include "crc32.h"

static uint32_t table[256];
static int ready;

static void init(void)
{
	uint32_t i, c;
	int k;

	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		table[i] = c;
	}
	ready = 1;
}

uint32_t crc32_update(uint32_t crc, const void *data, size_t n)
{
	const unsigned char *p = data;

	if (!ready)
		init();
	crc = ~crc;
	while (n--)
		crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
