/* Counts words read on stdin and prints "count word" lines, most frequent
 * first (ties by word). A small real tool for the example pipeline. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry { char *word; int count; };

static int by_count(const void *a, const void *b) {
    const struct entry *x = a, *y = b;
    if (x->count != y->count) return y->count - x->count;
    return strcmp(x->word, y->word);
}

int main(void) {
    struct entry *words = NULL;
    size_t n = 0, cap = 0;
    char buf[256];
    size_t len = 0;
    int c;
    do {
        c = getchar();
        if (c != EOF && (isalnum(c) || c == '\'') && len + 1 < sizeof buf) {
            buf[len++] = (char)tolower(c);
            continue;
        }
        if (len == 0) continue;
        buf[len] = '\0';
        len = 0;
        size_t i;
        for (i = 0; i < n && strcmp(words[i].word, buf) != 0; i++) {}
        if (i == n) {
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                words = realloc(words, cap * sizeof *words);
                if (!words) return 1;
            }
            words[n].word = strdup(buf);
            words[n++].count = 0;
        }
        words[i].count++;
    } while (c != EOF);
    qsort(words, n, sizeof *words, by_count);
    for (size_t i = 0; i < n; i++) printf("%d %s\n", words[i].count, words[i].word);
    return 0;
}
