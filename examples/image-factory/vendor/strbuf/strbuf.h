/* strbuf: a growable byte buffer. */
#ifndef STRBUF_H
#define STRBUF_H

#include <stddef.h>

struct strbuf {
	char *buf;
	size_t len;
	size_t cap;
};

#define STRBUF_INIT {0, 0, 0}

/* Each returns 0, or -1 when memory runs out (the buffer is unchanged). */
int sb_append(struct strbuf *sb, const void *data, size_t n);
int sb_putc(struct strbuf *sb, char c);
/* Reads the whole of a stream. */
int sb_read_all(struct strbuf *sb, void *stream);
void sb_release(struct strbuf *sb);

#endif
