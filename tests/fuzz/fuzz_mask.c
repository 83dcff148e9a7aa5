/* libFuzzer target: masking of personal data in free text (records, exports) — every output
 * buffer size, the result NUL-terminated within it, its length returned, never a partial UTF-8
 * sequence at a cut. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/mask.h"
#include "kefu/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *in = malloc(size + 1);
    if (!in) return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    int valid = kf_utf8_valid(in, strlen(in));
    size_t caps[] = {1, 2, 5, 8, 33, size / 2 + 1, 4 * size + 64};
    for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
        char *out = malloc(caps[k]);
        if (!out) break;
        size_t n = kf_mask_pii(out, caps[k], in);
        if (n >= caps[k] || strlen(out) != n) abort();
        /* a cut of valid text never leaves a lead byte without its continuation bytes */
        size_t i = n;
        while (i > 0 && ((unsigned char)out[i - 1] & 0xC0) == 0x80) i--;
        if (valid && i > 0 && (unsigned char)out[i - 1] >= 0xC0) {
            unsigned char lead = (unsigned char)out[i - 1];
            size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            if (n - (i - 1) < want) abort();
        }
        free(out);
    }
    free(in);
    return 0;
}
