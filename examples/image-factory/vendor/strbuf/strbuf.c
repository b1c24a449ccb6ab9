#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static int grow(struct strbuf *sb, size_t extra)
{
	size_t cap = sb->cap ? sb->cap : 64;
	char *p;

	if (sb->len + extra < sb->len)
		return -1;
	while (cap < sb->len + extra + 1)
		cap *= 2;
	if (cap == sb->cap)
		return 0;
	p = realloc(sb->buf, cap);
	if (!p)
		return -1;
	sb->buf = p;
	sb->cap = cap;
	return 0;
}

int sb_append(struct strbuf *sb, const void *data, size_t n)
{
	if (grow(sb, n))
		return -1;
	memcpy(sb->buf + sb->len, data, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
	return 0;
}

int sb_putc(struct strbuf *sb, char c)
{
	return sb_append(sb, &c, 1);
}

int sb_read_all(struct strbuf *sb, void *stream)
{
	char chunk[8192];
	size_t n;

	while ((n = fread(chunk, 1, sizeof(chunk), stream)) > 0)
		if (sb_append(sb, chunk, n))
			return -1;
	return ferror((FILE *)stream) ? -1 : 0;
}

void sb_release(struct strbuf *sb)
{
	free(sb->buf);
	sb->buf = NULL;
	sb->len = sb->cap = 0;
}
