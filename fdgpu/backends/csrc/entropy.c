/* Exact size of the entropy-coded segment of a baseline JPEG, as libjpeg-turbo (and so Pillow) writes it, from the
   quantized DCT coefficients: the CPU path of fdgpu.jpeg_size.

   What is counted, following libjpeg's encoder:
   - the MCU order of an interleaved scan (colour: per MCU the luma blocks row by row, then Cb, then Cr) or the
     raster order of a one-component scan (grayscale);
   - the dummy blocks that complete the last MCU column and row of a component (jccoefct.c): AC all zero, DC equal
     to the block on the left, or, in a dummy block row, to the last block of the row above within the same MCU;
   - per block the DC difference from the previous block of the same component (the predictor starts at 0), its
     magnitude category and that many extra bits; the AC coefficients in zigzag order as (run, size) symbols, a ZRL
     (0xF0) for every 16 zeros before a nonzero coefficient, EOB (0x00) when the block ends in zeros (jchuff.c);
   - Huffman codes from the standard tables of ITU-T T.81 Annex K.3 (libjpeg's defaults), or, with optimize, the
     per-image optimal tables of jchuff.c's jpeg_gen_optimal_table (the count of the reserved symbol 256 included,
     ties broken towards the larger symbol, code lengths limited to 16), built from the symbol counts of the same
     blocks;
   - the bytes those bits pack into, most significant bit first, a 0x00 after every 0xFF byte (byte stuffing), and
     the last byte padded with 1 bits (and stuffed too when that makes it 0xFF).

   The file's markers (SOI, APP0, DQT, SOF, DHT, SOS, EOI) are added by the caller (fdgpu/size.py); with optimize
   this code reports how many symbols each optimal table holds, which fixes the size of its DHT segment. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) || defined(__AVX512BW__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef int16_t i16;
typedef int64_t i64;
typedef uint8_t u8;

/* zigzag position of natural-order index k = 8 u + v (T.81 Figure A.6) */
static const u8 UNZIG[64] = {
    0, 1, 5, 6, 14, 15, 27, 28, 2, 4, 7, 13, 16, 26, 29, 42, 3, 8, 12, 17, 25, 30,
    41, 43, 9, 11, 18, 24, 31, 40, 44, 53, 10, 19, 23, 32, 39, 45, 52, 54, 20, 22, 33, 38,
    46, 51, 55, 60, 21, 34, 37, 47, 50, 56, 59, 61, 35, 36, 48, 49, 57, 58, 62, 63};

/* Annex K.3: code counts per length 1..16, then the symbols in code order */
static const u8 DC_LUMA_BITS[16] = {0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
static const u8 DC_CHROMA_BITS[16] = {0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
static const u8 DC_VALS[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const u8 AC_LUMA_BITS[16] = {0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d};
static const u8 AC_LUMA_VALS[162] = {
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71,
    0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72,
    0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37,
    0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
    0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
    0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3,
    0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};
static const u8 AC_CHROMA_BITS[16] = {0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77};
static const u8 AC_CHROMA_VALS[162] = {
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
    0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1,
    0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36,
    0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
    0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
    0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a,
    0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
    0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};

/* A code table: code and length per symbol (length 0: the symbol has no code). */
typedef struct {
    uint32_t code[256];
    u8 size[256];
} Codes;

/* Canonical codes from counts per length and the symbols in code order (jcphuff.c/jchuff.c's derived table). */
static void make_codes(const u8 bits[16], const u8 *vals, Codes *c)
{
    memset(c, 0, sizeof(*c));
    uint32_t code = 0;
    int p = 0;
    for (int len = 1; len <= 16; len++) {
        for (int k = 0; k < bits[len - 1]; k++, p++) {
            c->code[vals[p]] = code++;
            c->size[vals[p]] = (u8)len;
        }
        code <<= 1;
    }
}

/* jpeg_gen_optimal_table: counts of the 256 symbols -> counts per length (bits) and symbols in code order (vals).
   Returns the number of symbols. freq is consumed. */
static int optimal_table(i64 freq[257], u8 bits[16], u8 vals[256])
{
    u8 count[33] = {0};
    int codesize[257] = {0}, others[257];
    for (int i = 0; i < 257; i++)
        others[i] = -1;
    freq[256] = 1; /* the reserved symbol: no real code is all 1 bits */
    for (;;) {
        int c1 = -1, c2 = -1;
        i64 v = INT64_MAX;
        for (int i = 0; i <= 256; i++) /* smallest nonzero count, the larger symbol on ties */
            if (freq[i] && freq[i] <= v) {
                v = freq[i];
                c1 = i;
            }
        v = INT64_MAX;
        for (int i = 0; i <= 256; i++) /* the next smallest */
            if (freq[i] && freq[i] <= v && i != c1) {
                v = freq[i];
                c2 = i;
            }
        if (c2 < 0)
            break;
        freq[c1] += freq[c2];
        freq[c2] = 0;
        codesize[c1]++;
        while (others[c1] >= 0) {
            c1 = others[c1];
            codesize[c1]++;
        }
        others[c1] = c2;
        codesize[c2]++;
        while (others[c2] >= 0) {
            c2 = others[c2];
            codesize[c2]++;
        }
    }
    for (int i = 0; i <= 256; i++)
        if (codesize[i])
            count[codesize[i] > 32 ? 32 : codesize[i]]++; /* 257 symbols never give a code longer than 32 */
    int i;
    for (i = 32; i > 16; i--) /* limit the lengths to 16, as JPEG requires */
        while (count[i] > 0) {
            int j = i - 2;
            while (count[j] == 0)
                j--;
            count[i] -= 2;
            count[i - 1]++;
            count[j + 1] += 2;
            count[j]--;
        }
    while (count[i] == 0)
        i--;
    count[i]--; /* drop the reserved symbol's code from the longest length */
    int p = 0;
    for (int len = 1; len <= 32; len++)
        for (int s = 0; s <= 255; s++)
            if (codesize[s] == len)
                vals[p++] = (u8)s;
    for (int len = 1; len <= 16; len++)
        bits[len - 1] = count[len];
    return p;
}

/* Magnitude category: the bits of |v| (0 for 0), without a branch: 31 - clz(2 |v| + 1). */
static inline int nbits(int v)
{
    const unsigned a = (unsigned)(v < 0 ? -v : v);
    return 31 - __builtin_clz((a << 1) | 1u);
}

/* The bit writer: counts the bytes it would write, with stuffing. Bits gather in buf (its low 64 - free bits are
   pending, 0 < free <= 64 between calls; the bits above them are stale) and leave it 64 at a time, as libjpeg-turbo's
   jchuff.c flushes its bit buffer: eight bytes, plus one stuffed 0x00 for each of them that is 0xFF. A flush every
   eight bytes rather than every four halves the branches (one per ~8 symbols at q75). */
typedef struct {
    uint64_t buf;
    int free;
    i64 bytes;
} Writer;

/* how many of the eight bytes of v are 0xFF: a byte of ~v is zero exactly when its high bit stays clear below */
static inline int ff_bytes(uint64_t v)
{
    const uint64_t t = ~v, low7 = 0x7F7F7F7F7F7F7F7Full;
    const uint64_t nonzero = (((t & low7) + low7) | t) & ~low7;
    return 8 - __builtin_popcountll(nonzero);
}

/* size <= 27 bits (a code of at most 16 bits and its extra bits, at most 11), code < 2^size */
static inline void put_bits(Writer *w, uint64_t code, int size)
{
    w->free -= size;
    if (__builtin_expect(w->free < 0, 0)) { /* the pending bits and code's first size + free make 64: count them */
        const uint64_t word = (w->buf << (size + w->free)) | (code >> -w->free);
        w->bytes += 8 + ff_bytes(word);
        w->free += 64;
        w->buf = code;
    } else {
        w->buf = (w->buf << size) | code;
    }
}

/* The last bits: the last partial byte padded with 1 bits, then the pending whole bytes (stuffed alike). */
static inline void flush_bits(Writer *w)
{
    const int pad = (64 - w->free) & 7;
    if (pad)
        put_bits(w, (1u << (8 - pad)) - 1u, 8 - pad);
    for (int k = 64 - w->free; k >= 8; k -= 8)
        w->bytes += 1 + (((w->buf >> (k - 8)) & 0xFF) == 0xFF);
}

/* Bit k of the result: zigzag coefficient k of the block is nonzero, for k = 1..63 (bit 0, the DC, is clear). */
static inline uint64_t ac_mask(const i16 *blk)
{
#if defined(__AVX512BW__)
    const __m512i lo = _mm512_loadu_si512((const void *)blk), hi = _mm512_loadu_si512((const void *)(blk + 32));
    const uint64_t mask = (uint64_t)_mm512_test_epi16_mask(lo, lo) | (uint64_t)_mm512_test_epi16_mask(hi, hi) << 32;
    return mask & ~1ull;
#elif defined(__AVX2__)
    const __m256i zero = _mm256_setzero_si256();
    uint64_t mask = 0;
    for (int k = 0; k < 64; k += 32) { /* packs interleaves the 128-bit lanes: the permute puts them back in order */
        const __m256i a = _mm256_cmpeq_epi16(_mm256_loadu_si256((const __m256i *)(blk + k)), zero);
        const __m256i b = _mm256_cmpeq_epi16(_mm256_loadu_si256((const __m256i *)(blk + k + 16)), zero);
        const __m256i ab = _mm256_permute4x64_epi64(_mm256_packs_epi16(a, b), 0xD8);
        mask |= (uint64_t)(uint32_t)~_mm256_movemask_epi8(ab) << k;
    }
    return mask & ~1ull;
#elif defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    uint64_t mask = 0;
    for (int k = 0; k < 64; k += 16) {
        const __m128i a = _mm_cmpeq_epi16(_mm_loadu_si128((const __m128i *)(blk + k)), zero);
        const __m128i b = _mm_cmpeq_epi16(_mm_loadu_si128((const __m128i *)(blk + k + 8)), zero);
        mask |= (uint64_t)(uint16_t)~_mm_movemask_epi8(_mm_packs_epi16(a, b)) << k;
    }
    return mask & ~1ull;
#else
    uint64_t mask = 0;
    for (int k = 1; k < 64; k++)
        mask |= (uint64_t)(blk[k] != 0) << k;
    return mask;
#endif
}

/* v's extra bits in a category of s bits: v itself when positive, v - 1 (its low s bits) when negative */
static inline uint32_t extra_bits(int v, int s)
{
    return (uint32_t)(v + (v >> 31)) & ((1u << s) - 1u);
}

/* The magnitude category and extra bits of every AC value the baseline allows (|v| <= 1023, category <= 10), in one
   load: AC_BITS[v + 1023] = extra bits << 4 | category. Built once (pthread_once), 8 KiB. */
static uint32_t AC_BITS[2047];
static pthread_once_t ac_bits_once = PTHREAD_ONCE_INIT;

static void ac_bits_build(void)
{
    for (int v = -1023; v <= 1023; v++)
        AC_BITS[v + 1023] = extra_bits(v, nbits(v)) << 4 | (uint32_t)nbits(v);
}

/* One block (zigzag order): either count its symbols (freq: dcf, acf) or write its codes (w). Returns 0, or 3 for a
   coefficient out of the baseline range (DC difference category above 11, AC above 10: libjpeg's
   JERR_BAD_DCT_COEF). The zero runs come from the mask of nonzero coefficients (find-first-set), not from a test
   per coefficient. */
static inline __attribute__((always_inline)) int code_block(const i16 *blk, int *pred, i64 *dcf, i64 *acf,
                                                            const Codes *dc, const Codes *ac, Writer *w)
{
    const int diff = blk[0] - *pred;
    *pred = blk[0];
    int s = nbits(diff);
    if (__builtin_expect(s > 11, 0))
        return 3;
    if (w)
        put_bits(w, (dc->code[s] << s) | extra_bits(diff, s), dc->size[s] + s);
    else
        dcf[s]++;
    uint64_t mask = ac_mask(blk);
    int prev = 0;
    while (mask) {
        const int k = __builtin_ctzll(mask);
        mask &= mask - 1;
        int run = k - prev - 1;
        prev = k;
        while (__builtin_expect(run > 15, 0)) {
            if (w)
                put_bits(w, ac->code[0xF0], ac->size[0xF0]);
            else
                acf[0xF0]++;
            run -= 16;
        }
        const int v = blk[k];
        if (__builtin_expect((unsigned)(v + 1023) > 2046u, 0))
            return 3;
        const uint32_t e = AC_BITS[v + 1023];
        s = (int)(e & 15);
        const int sym = (run << 4) + s;
        if (w)
            put_bits(w, (ac->code[sym] << s) | (e >> 4), ac->size[sym] + s);
        else
            acf[sym]++;
    }
    if (prev < 63) { /* the block ends in zeros */
        if (w)
            put_bits(w, ac->code[0], ac->size[0]);
        else
            acf[0]++;
    }
    return 0;
}

/* The blocks of one image in scan order (see fdgpu_entropy_blocks): either count the symbols into freq (w NULL)
   or write the codes of codes into w. Returns 0 or 3 (code_block). */
static int scan_blocks(const i16 *blocks, long nmcu, int luma, int color, i64 freq[2][2][257],
                       const Codes codes[2][2], Writer *wp)
{
    int pred[3] = {0, 0, 0};
    const int bpm = luma + 2 * color;
    if (wp) {
        Writer w = *wp; /* in registers over the whole scan */
        for (long m = 0; m < nmcu; m++) {
            const i16 *mcu = blocks + m * bpm * 64L;
            int rc = 0;
            for (int b = 0; b < luma; b++)
                rc |= code_block(mcu + b * 64, &pred[0], NULL, NULL, &codes[0][0], &codes[0][1], &w);
            if (color) {
                rc |= code_block(mcu + luma * 64, &pred[1], NULL, NULL, &codes[1][0], &codes[1][1], &w);
                rc |= code_block(mcu + (luma + 1) * 64, &pred[2], NULL, NULL, &codes[1][0], &codes[1][1], &w);
            }
            if (rc)
                return 3;
        }
        *wp = w;
        return 0;
    }
    for (long m = 0; m < nmcu; m++) {
        const i16 *mcu = blocks + m * bpm * 64L;
        int rc = 0;
        for (int b = 0; b < luma; b++)
            rc |= code_block(mcu + b * 64, &pred[0], freq[0][0], freq[0][1], NULL, NULL, NULL);
        if (color) {
            rc |= code_block(mcu + luma * 64, &pred[1], freq[1][0], freq[1][1], NULL, NULL, NULL);
            rc |= code_block(mcu + (luma + 1) * 64, &pred[2], freq[1][0], freq[1][1], NULL, NULL, NULL);
        }
        if (rc)
            return 3;
    }
    return 0;
}

/* The entropy-coded segment of one image from its blocks in scan order: blocks holds nmcu MCUs of bpm = luma + 2
   (color) or luma (grayscale, luma = 1) blocks, each 64 int16 in zigzag order, the luma blocks of an MCU row by
   row then Cb and Cr, dummy blocks included (jccoefct.c). out[0]: the segment's bytes; with optimize (per-image
   optimal tables, else the standard ones) out[1..4]: the number of symbols of the optimal DC luma, AC luma, DC
   chroma and AC chroma tables (0 where unused). Returns 0, 1 for invalid arguments, 3 for a coefficient outside
   the baseline range (out not written then). Shared by fdgpu_jpeg_entropy (below) and fdgpu_jpeg_size
   (csrc/fused.c, which computes the blocks from the image); not exported. */
__attribute__((visibility("hidden"))) int fdgpu_entropy_blocks(const i16 *blocks, long nmcu, int luma, int color,
                                                               int optimize, i64 out[5])
{
    if (!blocks || !out || nmcu < 0 || luma < 1 || luma > 4 || (color != 0 && color != 1) ||
        (!color && luma != 1) || (optimize != 0 && optimize != 1))
        return 1;
    pthread_once(&ac_bits_once, ac_bits_build);
    static const u8 *const STD_TABLES[2][2][2] = {{{DC_LUMA_BITS, DC_VALS}, {AC_LUMA_BITS, AC_LUMA_VALS}},
                                                 {{DC_CHROMA_BITS, DC_VALS}, {AC_CHROMA_BITS, AC_CHROMA_VALS}}};
    i64 row[5] = {0, 0, 0, 0, 0};
    Codes codes[2][2];
    if (optimize) {
        i64 freq[2][2][257];
        memset(freq, 0, sizeof(freq));
        if (scan_blocks(blocks, nmcu, luma, color, freq, NULL, NULL))
            return 3;
        for (int t = 0; t < 1 + color; t++)
            for (int k = 0; k < 2; k++) {
                u8 bits[16], vals[256];
                row[1 + 2 * t + k] = optimal_table(freq[t][k], bits, vals);
                make_codes(bits, vals, &codes[t][k]);
            }
    } else {
        for (int t = 0; t < 2; t++)
            for (int k = 0; k < 2; k++)
                make_codes(STD_TABLES[t][k][0], STD_TABLES[t][k][1], &codes[t][k]);
    }
    Writer w = {0, 64, 0};
    if (scan_blocks(blocks, nmcu, luma, color, NULL, codes, &w))
        return 3;
    flush_bits(&w);
    row[0] = w.bytes;
    memcpy(out, row, sizeof(row));
    return 0;
}

typedef struct {
    const char *base; /* this image's coefficients */
    long sr, sc;      /* strides in elements: block row, block column */
    long su, sv;      /* and coefficient (u, v) of a block: natural-order index 8 u + v */
    int rows, cols;   /* the component's block grid, padded to whole MCUs */
    int real_rows, real_cols;
    int hs, vs; /* blocks per MCU across and down */
    int first;  /* the component's first block in an MCU */
} Comp;

/* The blocks of one component of one image into scan order (dst: the image's MCUs of bpm blocks), rounded to
   integers, each block in zigzag order. The grids come as fdgpu's quantizer leaves them (coefficient-major planes),
   so the loads run along block columns, contiguous for every coefficient k. Dummy blocks (jccoefct.c) replace the
   blocks beyond the real ones: AC zero, DC the last real block's on the left or, below the real rows, the DC of
   the last block of the row above within the same MCU. */
static void load_comp(const Comp *cp, int dtype, int bpm, int mcu_cols, i16 *dst)
{
    const int rc = cp->real_cols, hs = cp->hs, vs = cp->vs;
#define AT(r, c)                                                                                                \
    (dst + ((long)((r) / vs) * mcu_cols + (c) / hs) * bpm * 64 + (cp->first + ((r) % vs) * hs + (c) % hs) * 64)
    for (int r = 0; r < cp->rows; r++) {
        if (r >= cp->real_rows) { /* dummy row */
            for (int c = 0; c < cp->cols; c++) {
                i16 *b = AT(r, c);
                memset(b, 0, 64 * sizeof(i16));
                b[0] = AT(r - 1, (c / hs) * hs + hs - 1)[0];
            }
            continue;
        }
        for (int k = 0; k < 64; k++) {
            const long o = r * cp->sr + (k >> 3) * cp->su + (k & 7) * cp->sv;
            const int z = UNZIG[k];
            if (dtype == 0) {
                const i16 *p = (const i16 *)cp->base + o;
                for (int c = 0; c < rc; c++)
                    AT(r, c)[z] = p[c * cp->sc];
            } else if (dtype == 1) {
                const float *p = (const float *)cp->base + o;
                for (int c = 0; c < rc; c++) {
                    const float v = p[c * cp->sc];
                    const float a = floorf(fabsf(v) + 0.5f);
                    AT(r, c)[z] = (i16)(v < 0 ? -a : a);
                }
            } else {
                const double *p = (const double *)cp->base + o;
                for (int c = 0; c < rc; c++) {
                    const double v = p[c * cp->sc];
                    const double a = floor(fabs(v) + 0.5);
                    AT(r, c)[z] = (i16)(v < 0 ? -a : a);
                }
            }
        }
        for (int c = rc; c < cp->cols; c++) { /* dummy column */
            i16 *b = AT(r, c);
            memset(b, 0, 64 * sizeof(i16));
            b[0] = AT(r, rc - 1)[0];
        }
    }
#undef AT
}

/* Sizes of images i0..i1-1 of a batch.

   y, cb, cr: the quantized coefficients per component (cb = cr = NULL for grayscale), each a grid of blocks padded
   to whole MCUs, element (image i, block row r, block column c, coefficient (u, v)) at
   i * s[0] + r * s[1] + c * s[2] + u * s[3] + v * s[4] (ys for luma, cs for both chroma grids): the plane layout
   of fdgpu's encoder, the quotient layout of its forward or a block layout alike; dtype 0: int16 values,
   1: float32 or 2: float64 quotients, rounded half away from zero. Blocks beyond the real ones are ignored (the
   encoder's dummy blocks replace them). ly_rows, ly_cols: the luma grid; real_y_*: luma's real blocks,
   ceil(samples / 8); c_rows, c_cols: the chroma grid (chroma has one block per MCU); hs, vs: luma blocks per MCU
   (1 or 2). optimize: 0 standard tables, 1 per-image optimal tables.
   out: (n, 5) int64: the entropy-coded segment's bytes, then (optimize) the number of symbols of the optimal DC
   luma, AC luma, DC chroma and AC chroma tables (0 where unused).

   Returns 0, 1 for invalid arguments (nothing written), 2 when out of memory, 3 when a coefficient is outside the
   baseline range (that image's row is left as it was). */
int fdgpu_jpeg_entropy(const void *y, const void *cb, const void *cr, int dtype, const long *ys, const long *cs,
                       int n, int ly_rows, int ly_cols, int real_y_rows, int real_y_cols, int c_rows, int c_cols,
                       int hs, int vs, int optimize, int i0, int i1, i64 *out)
{
    const int color = cb != NULL;
    if (!y || !out || !ys || (cb == NULL) != (cr == NULL) || (color && !cs) || dtype < 0 || dtype > 2 || n < 0 ||
        i0 < 0 || i1 > n || i0 > i1)
        return 1;
    if (hs < 1 || hs > 2 || vs < 1 || vs > 2 || (!color && (hs != 1 || vs != 1)) || (optimize != 0 && optimize != 1))
        return 1;
    if (real_y_rows < 1 || real_y_cols < 1 || ly_rows % vs || ly_cols % hs || ly_rows < real_y_rows ||
        ly_cols < real_y_cols || ly_rows - real_y_rows >= vs || ly_cols - real_y_cols >= hs)
        return 1; /* the luma grid must be the real blocks rounded up to whole MCUs */
    if (color && (c_rows != ly_rows / vs || c_cols != ly_cols / hs))
        return 1;
    const long esize = dtype == 0 ? 2 : dtype == 1 ? 4 : 8;
    const long *st = color ? cs : ys;
    const int luma = hs * vs, bpm = luma + 2 * color;
    Comp comps[3] = {{NULL, ys[1], ys[2], ys[3], ys[4], ly_rows, ly_cols, real_y_rows, real_y_cols, hs, vs, 0},
                     {NULL, st[1], st[2], st[3], st[4], c_rows, c_cols, c_rows, c_cols, 1, 1, luma},
                     {NULL, st[1], st[2], st[3], st[4], c_rows, c_cols, c_rows, c_cols, 1, 1, luma + 1}};
    const long nmcu = (long)(ly_rows / vs) * (ly_cols / hs);
    i16 *blocks = malloc((size_t)nmcu * bpm * 64 * sizeof(i16));
    if (!blocks)
        return 2;
    int rc_all = 0;
    for (int i = i0; i < i1; i++) {
        comps[0].base = (const char *)y + i * ys[0] * esize;
        if (color) {
            comps[1].base = (const char *)cb + i * cs[0] * esize;
            comps[2].base = (const char *)cr + i * cs[0] * esize;
        }
        for (int ci = 0; ci < 1 + 2 * color; ci++)
            load_comp(&comps[ci], dtype, bpm, ly_cols / hs, blocks);
        int rc = fdgpu_entropy_blocks(blocks, nmcu, luma, color, optimize, out + 5L * i);
        if (rc)
            rc_all = rc;
    }
    free(blocks);
    return rc_all;
}
