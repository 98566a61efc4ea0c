/* The forward of fdgpu/reference/jpeg.py in one pass per image, in integer arithmetic (the CPU fast path).

   Every stage computes exactly what the torch reference computes (and so libjpeg-turbo / Pillow): input
   quantization floor(x * 255 + 0.5) clamped to 0..255, edge padding to whole MCUs, jccolor.c's RGB -> YCbCr,
   jcsample.c's box downsampling with its alternating bias, jfdctint.c's forward DCT, jcdctmgr.c's quantizer (as
   the float32 reciprocal that fdgpu/reference/quantize.py proves exact), dequantization, jidctint.c's inverse DCT
   with its range limit, jdsample.c's fancy (triangle) upsampling, jdcolor.c's YCbCr -> RGB, and the scaling
   back to [0, 1]. tests/test_fused.py asserts torch.equal against the reference on odd shapes, every
   subsampling, several qualities, FD tables and per-image tables.

   Layout of the DCT work: one block row (8 rows x nb blocks) at a time, each 8x8 block spread over 64 arrays of
   nb values (value k of row r of block j at [(8 k + r) nb + j]), so that every 1-D pass is a loop over j of
   independent butterflies that the compiler vectorises.

   Every entry point checks its arguments first (return code 3, fdgpu_error() names the argument) and reads or
   writes nothing when one is invalid. Threads: each thread has one scratch buffer, freed when the thread exits;
   the backward's DCT table is built once (pthread_once).

   Must be compiled without -ffast-math and with -ffp-contract=off (no fused multiply-add): the float steps
   (x * 255 + 0.5, the quantizer's reciprocal, the output's / 255) are the reference's, rounding included. */
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t i32;
typedef int64_t i64;
typedef uint8_t u8;

#define CONST_BITS 13
#define PASS1_BITS 2
#define FIX_0_298631336 2446
#define FIX_0_390180644 3196
#define FIX_0_541196100 4433
#define FIX_0_765366865 6270
#define FIX_0_899976223 7373
#define FIX_1_175875602 9633
#define FIX_1_501321110 12299
#define FIX_1_847759065 15137
#define FIX_1_961570560 16069
#define FIX_2_053119869 16819
#define FIX_2_562915447 20995
#define FIX_3_072711026 25172

/* Blocks per group: the DCT passes run over GROUP blocks at once (2 AVX-512 vectors of i32, no remainder), the
   group's three work arrays (24 KiB) stay in L1. */
#define GROUP 32

#define SCALEBITS 16
#define ONE_HALF (1 << (SCALEBITS - 1))
#define FIXC(x) ((i32)((x) * (1 << SCALEBITS) + 0.5))

/* ------------------------------------------------------------------------------------------ 1-D passes */
/* 8 inputs in[k * is + j], 8 outputs out[k * os + j], for j < n. */
static void fdct_pass(const i32 *in, long is, i32 *out, long os, int n, int shift)
{
    const i32 round = 1 << (shift - 1);
    const i32 *restrict p0 = in, *restrict p1 = in + is, *restrict p2 = in + 2 * is, *restrict p3 = in + 3 * is;
    const i32 *restrict p4 = in + 4 * is, *restrict p5 = in + 5 * is, *restrict p6 = in + 6 * is;
    const i32 *restrict p7 = in + 7 * is;
    i32 *restrict q0 = out, *restrict q1 = out + os, *restrict q2 = out + 2 * os, *restrict q3 = out + 3 * os;
    i32 *restrict q4 = out + 4 * os, *restrict q5 = out + 5 * os, *restrict q6 = out + 6 * os;
    i32 *restrict q7 = out + 7 * os;
#pragma GCC ivdep
    for (int j = 0; j < n; j++) {
        i32 d0 = p0[j], d1 = p1[j], d2 = p2[j], d3 = p3[j], d4 = p4[j], d5 = p5[j], d6 = p6[j], d7 = p7[j];
        i32 t0 = d0 + d7, t7 = d0 - d7, t1 = d1 + d6, t6 = d1 - d6;
        i32 t2 = d2 + d5, t5 = d2 - d5, t3 = d3 + d4, t4 = d3 - d4;
        i32 t10 = t0 + t3, t13 = t0 - t3, t11 = t1 + t2, t12 = t1 - t2;
        i32 z1 = (t12 + t13) * FIX_0_541196100;
        i32 y1 = t4 + t7, y2 = t5 + t6, y3 = t4 + t6, y4 = t5 + t7;
        i32 y5 = (y3 + y4) * FIX_1_175875602;
        y1 *= -FIX_0_899976223;
        y2 *= -FIX_2_562915447;
        y3 = y3 * -FIX_1_961570560 + y5;
        y4 = y4 * -FIX_0_390180644 + y5;
        q0[j] = ((t10 + t11) * (1 << CONST_BITS) + round) >> shift;
        q1[j] = (t7 * FIX_1_501321110 + y1 + y4 + round) >> shift;
        q2[j] = (z1 + t13 * FIX_0_765366865 + round) >> shift;
        q3[j] = (t6 * FIX_3_072711026 + y2 + y3 + round) >> shift;
        q4[j] = ((t10 - t11) * (1 << CONST_BITS) + round) >> shift;
        q5[j] = (t5 * FIX_2_053119869 + y2 + y4 + round) >> shift;
        q6[j] = (z1 + t12 * -FIX_1_847759065 + round) >> shift;
        q7[j] = (t4 * FIX_0_298631336 + y1 + y3 + round) >> shift;
    }
}

/* jidctint.c's butterfly on type T; pass 1 descales by 11, pass 2 (final) by 18, adds 128 and clamps. */
#define IDCT_OUT(T, FINAL, q, v)                                                                                        \
    do {                                                                                                        \
        T o_ = ((v) + round) >> shift;                                                                          \
        if (FINAL)                                                                                              \
            o_ = o_ + 128 < 0 ? 0 : (o_ + 128 > 255 ? 255 : o_ + 128);                                          \
        q[j] = (i32)o_;                                                                                         \
    } while (0)
#define IDCT_PASS(NAME, T, FINAL)                                                                               \
    static void NAME(const i32 *in, long is, i32 *out, long os, int n)                                          \
    {                                                                                                           \
        const int shift = FINAL ? CONST_BITS + PASS1_BITS + 3 : CONST_BITS - PASS1_BITS;                        \
        const T round = (T)1 << (shift - 1);                                                                    \
        const i32 *restrict p0 = in, *restrict p1 = in + is, *restrict p2 = in + 2 * is;                        \
        const i32 *restrict p3 = in + 3 * is, *restrict p4 = in + 4 * is, *restrict p5 = in + 5 * is;           \
        const i32 *restrict p6 = in + 6 * is, *restrict p7 = in + 7 * is;                                      \
        i32 *restrict q0 = out, *restrict q1 = out + os, *restrict q2 = out + 2 * os, *restrict q3 = out + 3 * os; \
        i32 *restrict q4 = out + 4 * os, *restrict q5 = out + 5 * os, *restrict q6 = out + 6 * os;              \
        i32 *restrict q7 = out + 7 * os;                                                                        \
        _Pragma("GCC ivdep") for (int j = 0; j < n; j++) {                                                    \
            T c0 = p0[j], c1 = p1[j], c2 = p2[j], c3 = p3[j], c4 = p4[j], c5 = p5[j], c6 = p6[j], c7 = p7[j];   \
            T z1 = (c2 + c6) * FIX_0_541196100;                                                                 \
            T t2 = z1 + c6 * -FIX_1_847759065, t3 = z1 + c2 * FIX_0_765366865;                                  \
            T t0 = (c0 + c4) * (1 << CONST_BITS), t1 = (c0 - c4) * (1 << CONST_BITS);                           \
            T t10 = t0 + t3, t13 = t0 - t3, t11 = t1 + t2, t12 = t1 - t2;                                       \
            T y1 = c7 + c1, y2 = c5 + c3, y3 = c7 + c3, y4 = c5 + c1;                                           \
            T y5 = (y3 + y4) * FIX_1_175875602;                                                                 \
            y1 *= -FIX_0_899976223;                                                                             \
            y2 *= -FIX_2_562915447;                                                                             \
            y3 = y3 * -FIX_1_961570560 + y5;                                                                    \
            y4 = y4 * -FIX_0_390180644 + y5;                                                                    \
            T o0 = c7 * FIX_0_298631336 + y1 + y3, o1 = c5 * FIX_2_053119869 + y2 + y4;                         \
            T o2 = c3 * FIX_3_072711026 + y2 + y3, o3 = c1 * FIX_1_501321110 + y1 + y4;                         \
            IDCT_OUT(T, FINAL, q0, t10 + o3);                                                                             \
            IDCT_OUT(T, FINAL, q1, t11 + o2);                                                                             \
            IDCT_OUT(T, FINAL, q2, t12 + o1);                                                                             \
            IDCT_OUT(T, FINAL, q3, t13 + o0);                                                                             \
            IDCT_OUT(T, FINAL, q4, t13 - o0);                                                                             \
            IDCT_OUT(T, FINAL, q5, t12 - o1);                                                                             \
            IDCT_OUT(T, FINAL, q6, t11 - o2);                                                                             \
            IDCT_OUT(T, FINAL, q7, t10 - o3);                                                                             \
        }                                                                                                       \
    }

IDCT_PASS(idct_pass1, i32, 0)
IDCT_PASS(idct_pass2, i32, 1)
IDCT_PASS(idct_pass2_wide, i64, 1)

/* ------------------------------------------------------------------------------------------ one plane */
typedef struct {
    const i32 *q;       /* 64 integer steps, natural order [vertical freq][horizontal freq] */
    const float *half;  /* 4 q + 0.5 */
    const float *recip; /* fl32(1 / 8q) */
    int wide;           /* some step > 255: the inverse DCT's second pass needs 64-bit sums */
} Table;

/* Quantize one group's coefficients in place to the integers r = round(t / 8q) a file holds (cf[(8 u + v) GROUP
   + j]: u horizontal, v vertical frequency), writing the quotients z = t / 8q to z (block layout, channel 8 v + u,
   plane stride zs) if given. */
static void quantize(i32 *restrict cf, int nb, const Table *tb, void *z, int z_double, long zs)
{
    for (int u = 0; u < 8; u++)
        for (int v = 0; v < 8; v++) {
            const int e = 8 * v + u;
            const i32 q = tb->q[e];
            const float half = tb->half[e], recip = tb->recip[e];
            i32 *restrict c = cf + (8 * u + v) * (long)GROUP;
            if (z && z_double) {
                double *restrict zp = (double *)z + e * zs;
                const double q8 = (double)q * 8.0;
                for (int j = 0; j < nb; j++) {
                    i32 a = c[j] < 0 ? -c[j] : c[j];
                    double d = (double)a / q8;
                    zp[j] = c[j] < 0 ? -d : d;
                }
            } else if (z) {
                float *restrict zp = (float *)z + e * zs;
                const float q8 = (float)q * 8.0f;
                for (int j = 0; j < nb; j++) {
                    i32 a = c[j] < 0 ? -c[j] : c[j];
                    float d = (float)a / q8;
                    zp[j] = c[j] < 0 ? -d : d;
                }
            }
            for (int j = 0; j < nb; j++) {
                i32 t = c[j];
                i32 a = t < 0 ? -t : t;
                i32 r = (i32)(((float)a + half) * recip);
                c[j] = t < 0 ? -r : r;
            }
        }
}

/* The decoder's dequantization, in place: r -> r q (jddctmgr.c). */
static void dequantize(i32 *restrict cf, int nb, const Table *tb)
{
    for (int u = 0; u < 8; u++)
        for (int v = 0; v < 8; v++) {
            const i32 q = tb->q[8 * v + u];
            i32 *restrict c = cf + (8 * u + v) * (long)GROUP;
            for (int j = 0; j < nb; j++)
                c[j] *= q;
        }
}

#if defined(__AVX2__)
/* encode_group's gather for 8 blocks side by side in a block row (p: their top-left sample): for each sample row r
   the 64 bytes of the 8 blocks, transposed as an 8x8 byte matrix (block, k) -> (k, block), level-shifted (x ^ 0x80
   read as int8 is x - 128) and widened to int32: a[(8 k + r) GROUP + jj] for jj < 8. A quarter of the scalar
   gather's instructions (fdgpu.jpeg_size of 32 photos 299x299, one thread: 0.262 -> 0.232 ms per image). */
static inline void gather8(const u8 *p, int cols, i32 *a)
{
    const __m128i flip = _mm_set1_epi8((char)0x80);
    for (int r = 0; r < 8; r++) {
        const u8 *q = p + (long)r * cols;
        __m128i x[8];
        for (int jj = 0; jj < 8; jj++)
            x[jj] = _mm_loadl_epi64((const __m128i *)(q + 8 * jj));
        const __m128i t0 = _mm_unpacklo_epi8(x[0], x[1]), t1 = _mm_unpacklo_epi8(x[2], x[3]);
        const __m128i t2 = _mm_unpacklo_epi8(x[4], x[5]), t3 = _mm_unpacklo_epi8(x[6], x[7]);
        const __m128i u0 = _mm_unpacklo_epi16(t0, t1), u1 = _mm_unpackhi_epi16(t0, t1);
        const __m128i u2 = _mm_unpacklo_epi16(t2, t3), u3 = _mm_unpackhi_epi16(t2, t3);
        const __m128i v[4] = {_mm_unpacklo_epi32(u0, u2), _mm_unpackhi_epi32(u0, u2), _mm_unpacklo_epi32(u1, u3),
                              _mm_unpackhi_epi32(u1, u3)}; /* v[m]: k = 2 m (low 8 bytes), 2 m + 1 (high 8) */
        for (int m = 0; m < 4; m++) {
            const __m128i s = _mm_xor_si128(v[m], flip);
            _mm256_storeu_si256((__m256i *)(a + (8 * (2 * m) + r) * GROUP), _mm256_cvtepi8_epi32(s));
            _mm256_storeu_si256((__m256i *)(a + (8 * (2 * m + 1) + r) * GROUP),
                                _mm256_cvtepi8_epi32(_mm_srli_si128(s, 8)));
        }
    }
}
#endif

/* The encoder's half on the nb (<= GROUP) blocks b0.. (raster order) of a u8 plane (cols samples wide): level
   shift, forward DCT, quantization; c receives the quantized integers (layout of quantize). a, b, c: 64 * GROUP
   i32 each. z: the plane's quotients (64, nblocks) or NULL. */
static void encode_group(const u8 *plane, int cols, long b0, int nb, const Table *tb, i32 *a, i32 *b, i32 *c,
                         void *z, int z_double, long nblocks)
{
    const int nbw = cols / 8;
    const long bs = 8L * GROUP;
    for (int j = 0; j < nb;) { /* gather: a[(8 k + r) GROUP + j] = sample (r, k) of block j, - 128 */
        const long blk = b0 + j;
        const u8 *p = plane + (blk / nbw) * 8L * cols + (blk % nbw) * 8;
#if defined(__AVX2__)
        if (j + 8 <= nb && blk % nbw + 8 <= nbw) { /* 8 blocks side by side: 8x8 byte transposes */
            gather8(p, cols, a + j);
            j += 8;
            continue;
        }
#endif
        for (int r = 0; r < 8; r++)
            for (int k = 0; k < 8; k++)
                a[(8 * k + r) * GROUP + j] = (i32)p[(long)r * cols + k] - 128;
        j++;
    }
    for (int r = 0; r < 8; r++) /* rows: a[k][r] -> b[u][r] */
        fdct_pass(a + r * GROUP, bs, b + r * GROUP, bs, nb, CONST_BITS - PASS1_BITS);
    for (int u = 0; u < 8; u++) /* columns: b[u][r] -> c[u][v] */
        fdct_pass(b + u * bs, GROUP, c + u * bs, GROUP, nb, CONST_BITS + PASS1_BITS);
    void *zr = NULL;
    if (z)
        zr = z_double ? (void *)((double *)z + b0) : (void *)((float *)z + b0);
    quantize(c, nb, tb, zr, z_double, nblocks);
}

/* The decoder's half on the same blocks: dequantization of c (in place), inverse DCT, range limit, scatter into
   the plane. */
static void decode_group(u8 *plane, int cols, long b0, int nb, const Table *tb, i32 *a, i32 *b, i32 *c)
{
    const int nbw = cols / 8;
    const long bs = 8L * GROUP;
    dequantize(c, nb, tb);
    for (int u = 0; u < 8; u++) /* columns: c[u][v] -> b[u][r] */
        idct_pass1(c + u * bs, GROUP, b + u * bs, GROUP, nb);
    for (int r = 0; r < 8; r++) /* rows: b[u][r] -> a[k][r], samples 0..255 */
        (tb->wide ? idct_pass2_wide : idct_pass2)(b + r * GROUP, bs, a + r * GROUP, bs, nb);
    for (int j = 0; j < nb; j++) { /* scatter back */
        const long blk = b0 + j;
        u8 *p = plane + (blk / nbw) * 8L * cols + (blk % nbw) * 8;
        for (int r = 0; r < 8; r++)
            for (int k = 0; k < 8; k++)
                p[(long)r * cols + k] = (u8)a[(8 * k + r) * GROUP + j];
    }
}

/* The codec on a u8 plane (rows x cols, multiples of 8), in place: the encoder's half then the decoder's, GROUP
   blocks (in raster order) at a time. scratch: 3 * 64 * GROUP i32. z: the plane's quotients (64, rows / 8,
   cols / 8), or NULL. */
static void codec_plane(u8 *plane, int rows, int cols, const Table *tb, i32 *scratch, void *z, int z_double)
{
    const long nblocks = (long)(rows / 8) * (cols / 8);
    i32 *a = scratch, *b = scratch + 64L * GROUP, *c = scratch + 128L * GROUP;
    for (long b0 = 0; b0 < nblocks; b0 += GROUP) {
        const int nb = nblocks - b0 < GROUP ? (int)(nblocks - b0) : GROUP;
        encode_group(plane, cols, b0, nb, tb, a, b, c, z, z_double, nblocks);
        decode_group(plane, cols, b0, nb, tb, a, b, c);
    }
}

/* ------------------------------------------------------------------------------------------ tables */
/* Integer steps 1..32768 (the reference's float32 quantizer); 0 when a step is anything else (the caller then
   uses the torch reference, which handles fractional and huge steps in float64). */
static int load_table(const void *src, int dbl, i32 *q, float *half, float *recip, int *wide)
{
    for (int e = 0; e < 64; e++) {
        double s = dbl ? ((const double *)src)[e] : (double)((const float *)src)[e];
        if (!(s >= 1.0 && s <= 32768.0 && s == floor(s)))
            return 0;
        q[e] = (i32)s;
        half[e] = (float)q[e] * 4.0f + 0.5f;
        recip[e] = 1.0f / ((float)q[e] * 8.0f);
        if (q[e] > 255)
            *wide = 1;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ one image */
static inline i32 clamp255(i32 v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

/* Input rows PREFETCH_ROWS ahead of the one being read are requested from memory (one prefetch per 64-byte line):
   the hardware prefetcher alone left the reads of the float input waiting (fdgpu.jpeg_size of 32 photos 299x299,
   one thread: 0.323 -> 0.277 ms per image, 2 rows ahead; 1 and 4 rows gave the same within 0.004 ms). */
#define PREFETCH_ROWS 2
static inline void prefetch_bytes(const void *p, long bytes)
{
    for (long k = 0; k < bytes; k += 64)
        __builtin_prefetch((const char *)p + k);
}

typedef struct {
    int h, w, ch, hs, vs, hp, wp, hc, wc;
    long sc, sh, sw; /* the input image's strides in elements: channel, row, column (make_geo: contiguous) */
} Geo;

/* Row buffers (i32) of one image: R, G, B; two rows of Cb and Cr before downsampling; column sums and the
   upsampled Cb, Cr of one output row. */
#define ROWS 13

/* Images stacked per codec call when they are small (at most this many blocks of luma in a stack) */
#define STACK_BLOCKS 256

static size_t scratch_bytes(const Geo *g, int stack)
{
    size_t luma = (size_t)g->hp * g->wp, chroma = (size_t)(g->hp / g->vs) * (g->wp / g->hs);
    size_t codec = 3 * 64 * sizeof(i32) * GROUP;
    return stack * (luma + 2 * chroma) + codec + ROWS * sizeof(i32) * ((size_t)g->wp + 8) + 128;
}

/* jccolor.c on one row of samples */
static void rgb_to_ycc(const i32 *restrict R, const i32 *restrict G, const i32 *restrict B, u8 *restrict y,
                       i32 *restrict cb, i32 *restrict cr, int n)
{
    const i32 bias_c = (128 << SCALEBITS) + ONE_HALF - 1;
    for (int c = 0; c < n; c++) {
        y[c] = (u8)((FIXC(0.29900) * R[c] + FIXC(0.58700) * G[c] + FIXC(0.11400) * B[c] + ONE_HALF) >> SCALEBITS);
        cb[c] = (-FIXC(0.16874) * R[c] - FIXC(0.33126) * G[c] + FIXC(0.50000) * B[c] + bias_c) >> SCALEBITS;
        cr[c] = (FIXC(0.50000) * R[c] - FIXC(0.41869) * G[c] - FIXC(0.08131) * B[c] + bias_c) >> SCALEBITS;
    }
}

/* jcsample.c: one output row from one (vs = 1) or two (vs = 2) rows, hs in {1, 2}; rows[0], rows[1] */
static void downsample_row(const i32 *restrict r0, const i32 *restrict r1, u8 *restrict out, int n, int hs,
                           int vs)
{
    if (hs == 1 && vs == 1)
        for (int c = 0; c < n; c++)
            out[c] = (u8)r0[c];
    else if (vs == 1) /* 2x1: bias 0, 1, 0, 1, ... */
        for (int c = 0; c < n; c++)
            out[c] = (u8)((r0[2 * c] + r0[2 * c + 1] + (c & 1)) >> 1);
    else /* 2x2: bias 1, 2, 1, 2, ... */
        for (int c = 0; c < n; c++)
            out[c] = (u8)((r0[2 * c] + r0[2 * c + 1] + r1[2 * c] + r1[2 * c + 1] + 1 + (c & 1)) >> 2);
}

/* jdsample.c for one output row: s holds wc values at s[1..wc] (column sums 3 near + far when vs = 2, else the
   chroma row), s[0] and s[wc + 1] are set here to the edge values; out gets at least w values. */
static void upsample_row(i32 *restrict s, i32 *restrict out, int wc, int w, int hs, int vs, int fancy)
{
    s[0] = s[1], s[wc + 1] = s[wc];
    if (!fancy) {
        if (hs == 1)
            for (int c = 0; c < w; c++)
                out[c] = s[c + 1];
        else
            for (int k = 0; k < wc; k++)
                out[2 * k] = out[2 * k + 1] = s[k + 1];
        return;
    }
    const int sh = vs == 2 ? 4 : 2;
    const i32 be = vs == 2 ? 8 : 1, bo = vs == 2 ? 7 : 2;
    for (int k = 0; k < wc; k++) {
        out[2 * k] = (3 * s[k + 1] + s[k] + be) >> sh;
        out[2 * k + 1] = (3 * s[k + 1] + s[k + 2] + bo) >> sh;
    }
}

/* What fdgpu_forward_checked gathers while the forward reads its input (this thread's call; NULL otherwise): how
   many values lie outside [lo, hi] or are NaN, lo and hi as floats (lo_f, hi_f) chosen so that the float
   comparisons decide exactly as the double ones. */
typedef struct {
    double lo, hi;
    float lo_f, hi_f;
    long bad;
} InputCheck;
static __thread InputCheck *input_check;

/* Input samples floor(v * 255 + 0.5), NaN -> 0, clamped to 0..255, edge-replicated from w to wp; YCbCr -> RGB
   (jdcolor.c) with the range limit and the scaling to [0, 1]. With input_check, the value check of validate=True
   in the same loop: a count of the values inside the bounds (two comparisons and an add, vectorised with the
   conversion; NaN fails both comparisons). The input row's values are AT(c): src[c] (vectorised), or
   src[c * sw] for a column stride sw (e.g. 3 for an image stored channels-last). */
#define SAMPLES_LOOPS(T, FLOOR, LO, HI, AT)                                                                     \
    if (chk) {                                                                                                  \
        const T lo = (T)chk->LO, hi = (T)chk->HI;                                                               \
        int inside = 0;                                                                                         \
        for (int c = 0; c < w; c++) {                                                                           \
            const T v = AT(c);                                                                                  \
            inside += (v >= lo) & (v <= hi);                                                                    \
            T u = v * (T)255.0;                                                                                 \
            u = FLOOR(u + (T)0.5);                                                                              \
            u = u >= 0 ? u : 0; /* NaN too */                                                                   \
            u = u <= 255 ? u : 255;                                                                             \
            dst[c] = (i32)u;                                                                                    \
        }                                                                                                       \
        chk->bad += w - inside;                                                                                 \
    } else {                                                                                                    \
        for (int c = 0; c < w; c++) {                                                                           \
            T u = AT(c) * (T)255.0;                                                                             \
            u = FLOOR(u + (T)0.5);                                                                              \
            u = u >= 0 ? u : 0; /* NaN too */                                                                   \
            u = u <= 255 ? u : 255;                                                                             \
            dst[c] = (i32)u;                                                                                    \
        }                                                                                                       \
    }
#define AT_CONTIGUOUS(c) src[c]
#define AT_STRIDED(c) src[(long)(c) * sw]
#define CONVERT(T, FLOOR, LO, HI)                                                                               \
    static void samples_##T(const T *restrict src, long sw, i32 *restrict dst, int w, int wp)                   \
    {                                                                                                           \
        InputCheck *chk = input_check;                                                                          \
        if (sw == 1) {                                                                                          \
            SAMPLES_LOOPS(T, FLOOR, LO, HI, AT_CONTIGUOUS)                                                      \
        } else {                                                                                                \
            SAMPLES_LOOPS(T, FLOOR, LO, HI, AT_STRIDED)                                                         \
        }                                                                                                       \
        for (int c = w; c < wp; c++)                                                                            \
            dst[c] = dst[w - 1];                                                                                \
    }                                                                                                           \
    static void ycc_to_rgb_##T(const u8 *restrict y, const i32 *restrict cb, const i32 *restrict cr,            \
                               T *restrict r, T *restrict g, T *restrict b, int w)                              \
    {                                                                                                           \
        for (int c = 0; c < w; c++) {                                                                           \
            const i32 yv = y[c], cbs = cb[c] - 128, crs = cr[c] - 128;                                          \
            const i32 R = yv + ((FIXC(1.40200) * crs + ONE_HALF) >> SCALEBITS);                                 \
            const i32 G = yv + ((-FIXC(0.34414) * cbs - FIXC(0.71414) * crs + ONE_HALF) >> SCALEBITS);           \
            const i32 B = yv + ((FIXC(1.77200) * cbs + ONE_HALF) >> SCALEBITS);                                 \
            r[c] = (T)clamp255(R) / (T)255;                                                                     \
            g[c] = (T)clamp255(G) / (T)255;                                                                     \
            b[c] = (T)clamp255(B) / (T)255;                                                                     \
        }                                                                                                       \
    }
CONVERT(float, floorf, lo_f, hi_f)
CONVERT(double, floor, lo, hi)

/* One image: x (ch, h, w) -> out (ch, h, w). T is the input/output float type. */
#define IMAGE(T)                                                                                                \
    static void image_##T(const T *x, T *out, const Geo *g, const Table *lt, const Table *ct, void *zy,         \
                          void *zc, int z_double, u8 *Y, u8 *Cb, u8 *Cr, i32 *codec, int stages)                \
    {                                                                                                           \
        const int h = g->h, w = g->w, hp = g->hp, wp = g->wp, hs = g->hs, vs = g->vs;                           \
        const int hcp = hp / vs, wcp = wp / hs, hc = g->hc, wc = g->wc;                                         \
        const long plane = (long)h * w, rs = wp + 8;                                                            \
        i32 *row = codec + 3 * 64L * GROUP;                                                                  \
        i32 *R = row, *G = R + rs, *B = G + rs, *cb = B + rs, *cr = cb + 2 * rs, *sb = cr + 2 * rs;             \
        i32 *sr = sb + rs, *ub = sr + rs, *ur = ub + rs;                                                        \
        if (g->ch == 1) {                                                                                       \
            for (int r = 0; r < h && (stages & 1); r++) {                                                       \
                if (r + PREFETCH_ROWS < h)                                                                      \
                    prefetch_bytes(x + (r + PREFETCH_ROWS) * g->sh, ((w - 1) * g->sw + 1) * (long)sizeof(T));   \
                samples_##T(x + r * g->sh, g->sw, R, w, wp);                                                    \
                for (int c = 0; c < wp; c++)                                                                    \
                    Y[(long)r * wp + c] = (u8)R[c];                                                             \
            }                                                                                                   \
            for (int r = h; r < hp && (stages & 1); r++)                                                        \
                memcpy(Y + (long)r * wp, Y + (long)(h - 1) * wp, wp);                                           \
            if (stages & 2)                                                                                     \
                codec_plane(Y, hp, wp, lt, codec, zy, z_double);                                                \
            for (int r = 0; r < h && (stages & 4); r++)                                                         \
                for (int c = 0; c < w; c++)                                                                     \
                    out[(long)r * w + c] = (T)Y[(long)r * wp + c] / (T)255;                                     \
            return;                                                                                             \
        }                                                                                                       \
        /* RGB -> YCbCr on the padded image, chroma downsampled row group by row group */                       \
        for (int ro = 0; ro < hc && (stages & 1); ro++) {                                                       \
            for (int dv = 0; dv < vs; dv++) {                                                                   \
                const int r = ro * vs + dv;                                                                     \
                const T *xr = x + (r < h ? r : h - 1) * g->sh;                                                  \
                if (r + PREFETCH_ROWS < h) { /* the row of each channel plane, or one interleaved row */        \
                    const T *xp = x + (r + PREFETCH_ROWS) * g->sh;                                              \
                    const long span = (w - 1) * g->sw + 1;                                                      \
                    if (g->sc >= span)                                                                          \
                        for (int k = 0; k < 3; k++)                                                             \
                            prefetch_bytes(xp + k * g->sc, span * (long)sizeof(T));                             \
                    else                                                                                        \
                        prefetch_bytes(xp, (span + 2 * g->sc) * (long)sizeof(T));                               \
                }                                                                                               \
                samples_##T(xr, g->sw, R, w, wp);                                                               \
                samples_##T(xr + g->sc, g->sw, G, w, wp);                                                       \
                samples_##T(xr + 2 * g->sc, g->sw, B, w, wp);                                                   \
                rgb_to_ycc(R, G, B, Y + (long)r * wp, cb + dv * rs, cr + dv * rs, wp);                          \
            }                                                                                                   \
            downsample_row(cb, cb + rs, Cb + (long)ro * wcp, wcp, hs, vs);                                      \
            downsample_row(cr, cr + rs, Cr + (long)ro * wcp, wcp, hs, vs);                                      \
        }                                                                                                       \
        for (int r = hc * vs; r < hp && (stages & 1); r++) /* rows past the image repeat its last row */        \
            memcpy(Y + (long)r * wp, Y + (long)(h - 1) * wp, wp);                                               \
        for (int ro = hc; ro < hcp && (stages & 1); ro++) { /* libjpeg repeats the last downsampled row */      \
            memcpy(Cb + (long)ro * wcp, Cb + (long)(hc - 1) * wcp, wcp);                                        \
            memcpy(Cr + (long)ro * wcp, Cr + (long)(hc - 1) * wcp, wcp);                                        \
        }                                                                                                       \
        if (stages & 2) {                                                                                       \
            const long zcs = 64L * (hcp / 8) * (wcp / 8);                                                       \
            codec_plane(Y, hp, wp, lt, codec, zy, z_double);                                                    \
            codec_plane(Cb, hcp, wcp, ct, codec, zc, z_double);                                                 \
            codec_plane(Cr, hcp, wcp, ct, codec,                                                                \
                        zc ? (z_double ? (void *)((double *)zc + zcs) : (void *)((float *)zc + zcs)) : NULL,    \
                        z_double);                                                                              \
        }                                                                                                       \
        if (!(stages & 4))                                                                                      \
            return;                                                                                             \
        /* upsample (fancy when the chroma is wider than 2 samples) and YCbCr -> RGB, row by row */             \
        const int fancy = wc > 2 && (hs > 1 || vs > 1);                                                         \
        for (int r = 0; r < h; r++) {                                                                           \
            const int i = r / vs;                                                                               \
            const u8 *bi = Cb + (long)i * wcp, *ri = Cr + (long)i * wcp;                                        \
            if (vs == 2 && fancy) {                                                                             \
                const int nbr = (r & 1) ? (i + 1 < hc ? i + 1 : hc - 1) : (i > 0 ? i - 1 : 0);                  \
                const u8 *bn = Cb + (long)nbr * wcp, *rn = Cr + (long)nbr * wcp;                                \
                for (int c = 0; c < wc; c++) {                                                                  \
                    sb[c + 1] = 3 * bi[c] + bn[c];                                                              \
                    sr[c + 1] = 3 * ri[c] + rn[c];                                                              \
                }                                                                                               \
            } else {                                                                                            \
                for (int c = 0; c < wc; c++) {                                                                  \
                    sb[c + 1] = bi[c];                                                                          \
                    sr[c + 1] = ri[c];                                                                          \
                }                                                                                               \
            }                                                                                                   \
            upsample_row(sb, ub, wc, w, hs, vs, fancy);                                                         \
            upsample_row(sr, ur, wc, w, hs, vs, fancy);                                                         \
            T *o = out + (long)r * w;                                                                           \
            ycc_to_rgb_##T(Y + (long)r * wp, ub, ur, o, o + plane, o + 2 * plane, w);                           \
        }                                                                                                       \
    }
IMAGE(float)
IMAGE(double)

/* ------------------------------------------------------------------------------------------ arguments */
/* Return codes of the entry points; the argument errors name what is wrong in fdgpu_error(). */
#define OK 0
#define BAD_STEP 1 /* a step that is not an integer in 1..32768: declined, nothing written */
#define NO_MEMORY 2
#define BAD_ARGUMENT 3

/* Sides up to 2**28 samples: every padded size below fits an int, every offset an int64. */
#define MAX_SIDE (1 << 28)

static __thread const char *last_error = "";

/* What the last call on this thread found wrong with its arguments (a static string; "" when none). */
const char *fdgpu_error(void) { return last_error; }

static int bad(const char *why)
{
    last_error = why;
    return BAD_ARGUMENT;
}

/* The checks every entry runs first: the batch, the image, the chroma factors and the image range. */
static int check_batch(int n, int ch, int h, int w, int hs, int vs, int i0, int i1, int dbl)
{
    if (n < 1)
        return bad("n: expected a batch of at least 1 image");
    if (ch != 1 && ch != 3)
        return bad("ch: expected 1 (grayscale) or 3 (RGB) channels");
    if (h < 1 || w < 1 || h > MAX_SIDE || w > MAX_SIDE)
        return bad("h, w: expected sides in 1..2**28");
    if ((i64)h * w > INT64_MAX / 64 / ch / n)
        return bad("n, ch, h, w: the batch has more values than an int64 offset reaches");
    if (!((hs == 1 && vs == 1) || (hs == 2 && vs == 1) || (hs == 2 && vs == 2)))
        return bad("hs, vs: expected chroma factors (1, 1), (2, 1) or (2, 2)");
    if (i0 < 0 || i0 > i1 || i1 > n)
        return bad("i0, i1: expected 0 <= i0 <= i1 <= n");
    if (dbl != 0 && dbl != 1)
        return bad("the float type flag: expected 0 (float32) or 1 (float64)");
    return OK;
}

/* The saved quotients of an image batch: zy n * 64 * (hp / 8) * (wp / 8) values, zc (colour only) twice the
   chroma plane's; NULL for none, and then its length is not read. */
static int check_state(const Geo *g, int n, const void *zy, i64 zy_len, const void *zc, i64 zc_len)
{
    const i64 ny = (i64)n * 64 * (g->hp / 8) * (g->wp / 8);
    const i64 nc = (i64)n * 2 * 64 * (g->hp / 8 / g->vs) * (g->wp / 8 / g->hs);
    if (zy && zy_len != ny)
        return bad("zy: expected n * 64 * (hp / 8) * (wp / 8) saved luma quotients for this size and subsampling");
    if (zc && g->ch != 3)
        return bad("zc: expected NULL for a grayscale image");
    if (zc && zc_len != nc)
        return bad("zc: expected n * 2 * 64 * (hp / 8 / vs) * (wp / 8 / hs) saved chroma quotients for this size "
                   "and subsampling");
    return OK;
}

/* ------------------------------------------------------------------------------------------ scratch */
/* One scratch buffer per thread, grown on demand and freed when the thread exits (a pthread key's destructor:
   thread-per-request servers and rebuilt thread pools would otherwise leak one buffer per thread). */
typedef struct {
    u8 *buf;
    size_t size;
} Scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *p)
{
    Scratch *s = (Scratch *)p;
    free(s->buf);
    free(s);
}

static void scratch_key_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

/* The geometry of an (ch, h, w) image at chroma factors (hs, vs): planes padded to whole MCUs. */
static Geo make_geo(int ch, int h, int w, int hs, int vs)
{
    Geo g;
    g.h = h, g.w = w, g.ch = ch;
    g.hs = ch == 3 ? hs : 1, g.vs = ch == 3 ? vs : 1;
    g.hp = (h + 8 * g.vs - 1) / (8 * g.vs) * (8 * g.vs);
    g.wp = (w + 8 * g.hs - 1) / (8 * g.hs) * (8 * g.hs);
    g.hc = (h + g.vs - 1) / g.vs, g.wc = (w + g.hs - 1) / g.hs;
    g.sc = (long)h * w, g.sh = w, g.sw = 1;
    return g;
}

/* This thread's scratch buffer, grown to at least need bytes; NULL when out of memory. */
static u8 *ensure_scratch(size_t need)
{
    pthread_once(&scratch_once, scratch_key_init);
    if (!scratch_key_ok)
        return NULL;
    Scratch *s = (Scratch *)pthread_getspecific(scratch_key);
    if (!s) {
        s = (Scratch *)calloc(1, sizeof *s);
        if (!s)
            return NULL;
        if (pthread_setspecific(scratch_key, s)) {
            free(s);
            return NULL;
        }
    }
    if (need > s->size) {
        free(s->buf);
        s->buf = (u8 *)malloc(need);
        s->size = s->buf ? need : 0;
    }
    return s->buf;
}

/* The forward of images [i0, i1) of a batch x (n, ch, h, w), contiguous, into out (same layout).
   Tables: 64 steps each (float32, or float64 when tables_double), table_stride 64 for per-image tables or 0 for
   shared ones; ct is ignored for ch = 1. zy, zc: the quotients ((n, 1, 64, hp/8, wp/8) and (n, 2, 64, hp/8/vs,
   wp/8/hs), float32 or float64 by z_double) or NULL, with their lengths in values zy_len, zc_len. Returns 0, or
   1 when a table holds a step that is not an integer in 1..32768 (nothing is written then), 2 when out of
   memory, 3 when an argument is invalid (nothing is read or written then; fdgpu_error() says which). */
int fdgpu_forward(const void *x, void *out, int x_double, int n, int ch, int h, int w, int hs, int vs, int i0,
                  int i1, const void *lt, const void *ct, int tables_double, int table_stride, void *zy, void *zc,
                  int z_double, int64_t zy_len, int64_t zc_len)
{
    last_error = "";
    int e = check_batch(n, ch, h, w, hs, vs, i0, i1, x_double);
    if (e)
        return e;
    if (!x || !out)
        return bad("x, out: expected non-NULL pointers");
    if (!lt || (ch == 3 && !ct))
        return bad("lt, ct: expected a luma table, and a chroma table for ch = 3");
    if (tables_double != 0 && tables_double != 1)
        return bad("tables_double: expected 0 (float32) or 1 (float64)");
    if (table_stride != 0 && table_stride != 64)
        return bad("table_stride: expected 0 (one shared table) or 64 (one table per image)");
    if (z_double != 0 && z_double != 1)
        return bad("z_double: expected 0 (float32) or 1 (float64)");
    Geo g = make_geo(ch, h, w, hs, vs);
    if ((e = check_state(&g, n, zy, zy_len, zc, zc_len)))
        return e;
    const int tsize = table_stride ? 64 : 0;
    const long tstep = tables_double ? 8L * table_stride : 4L * table_stride;
    i32 q[2][64];
    float half[2][64], recip[2][64];
    Table tabs[2];
    for (int t = 0; t < 2; t++) /* check every table first, so that nothing is written on failure */
        for (int i = i0; i < (tsize ? i1 : i0 + 1); i++) {
            const void *src = (const char *)(t == 0 ? lt : ct) + (long)i * tstep;
            int wide = 0;
            if ((t == 0 || ch == 3) && !load_table(src, tables_double, q[t], half[t], recip[t], &wide))
                return BAD_STEP;
        }
    const long ly = (long)g.hp * g.wp, lc = (long)(g.hp / g.vs) * (g.wp / g.hs);
    /* Small images with shared tables and no quotients: STACK images' planes one above the other, so that the
       DCT passes run over full groups of blocks instead of a few blocks per plane. */
    const int stack = (!zy && !zc && !tsize && ly <= 4096) ? (int)(STACK_BLOCKS / (ly / 64)) : 1;
    u8 *buf = ensure_scratch(scratch_bytes(&g, stack));
    if (!buf)
        return NO_MEMORY;
    const long xs = (long)ch * h * w;
    const long zys = 64L * (g.hp / 8) * (g.wp / 8), zcs = 2 * 64L * (g.hp / 8 / g.vs) * (g.wp / 8 / g.hs);
    const int zb = z_double ? 8 : 4;
    i32 *codec = (i32 *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    u8 *Y = (u8 *)(codec + 3 * 64L * GROUP + ROWS * ((long)g.wp + 8)), *Cb = Y + stack * ly, *Cr = Cb + stack * lc;
    for (int i = i0; i < i1; i += stack) {
        const int k = i1 - i < stack ? i1 - i : stack;
        for (int t = 0; t < (ch == 3 ? 2 : 1); t++) {
            const void *src = (const char *)(t == 0 ? lt : ct) + (tsize ? (long)i * tstep : 0);
            tabs[t].wide = 0;
            load_table(src, tables_double, q[t], half[t], recip[t], &tabs[t].wide);
            tabs[t].q = q[t], tabs[t].half = half[t], tabs[t].recip = recip[t];
        }
        void *zyi = zy ? (char *)zy + (long)i * zys * zb : NULL;
        void *zci = zc ? (char *)zc + (long)i * zcs * zb : NULL;
        int stages = k == 1 && stack == 1 ? 7 : 1;
        for (int s = 0; s < k; s++)
            if (x_double)
                image_double((const double *)x + (i + s) * xs, (double *)out + (i + s) * xs, &g, &tabs[0], &tabs[1],
                             zyi, zci, z_double, Y + s * ly, Cb + s * lc, Cr + s * lc, codec, stages);
            else
                image_float((const float *)x + (i + s) * xs, (float *)out + (i + s) * xs, &g, &tabs[0], &tabs[1],
                            zyi, zci, z_double, Y + s * ly, Cb + s * lc, Cr + s * lc, codec, stages);
        if (stages == 7)
            continue;
        codec_plane(Y, k * g.hp, g.wp, &tabs[0], codec, NULL, 0);
        if (ch == 3) {
            codec_plane(Cb, k * (g.hp / g.vs), g.wp / g.hs, &tabs[1], codec, NULL, 0);
            codec_plane(Cr, k * (g.hp / g.vs), g.wp / g.hs, &tabs[1], codec, NULL, 0);
        }
        for (int s = 0; s < k; s++)
            if (x_double)
                image_double((const double *)x + (i + s) * xs, (double *)out + (i + s) * xs, &g, &tabs[0], &tabs[1],
                             NULL, NULL, z_double, Y + s * ly, Cb + s * lc, Cr + s * lc, codec, 4);
            else
                image_float((const float *)x + (i + s) * xs, (float *)out + (i + s) * xs, &g, &tabs[0], &tabs[1],
                            NULL, NULL, z_double, Y + s * ly, Cb + s * lc, Cr + s * lc, codec, 4);
    }
    return OK;
}

/* The bounds of validate=True's check (check[0] <= check[1], finite) as the loop that reads x compares them: lo_f
   the smallest float >= lo, hi_f the largest float <= hi, so that the float comparisons decide as the double ones. */
static int input_check_init(InputCheck *chk, const double *check)
{
    if (!check)
        return bad("check: expected a non-NULL pointer to 3 doubles");
    if (!(isfinite(check[0]) && isfinite(check[1]) && check[0] <= check[1]))
        return bad("check: expected finite bounds check[0] <= check[1]");
    *chk = (InputCheck){check[0], check[1], (float)check[0], (float)check[1], 0};
    if ((double)chk->lo_f < chk->lo)
        chk->lo_f = nextafterf(chk->lo_f, INFINITY);
    if ((double)chk->hi_f > chk->hi)
        chk->hi_f = nextafterf(chk->hi_f, -INFINITY);
    return OK;
}

/* fdgpu_forward with the value check of validate=True fused into its read of x: the same arguments, then check
   (3 doubles): check[0] and check[1] the bounds lo <= hi of the valid values (finite, not NaN); check[2] receives
   the number of values of images [i0, i1) outside [lo, hi] or NaN (+-Inf lies outside any finite bounds). Python
   reads the values again only when that number is not 0, to raise fdgpu._checks.x_error's exact message. The same
   return codes; check[2] is written only when the forward returns 0. */
int fdgpu_forward_checked(const void *x, void *out, int x_double, int n, int ch, int h, int w, int hs, int vs,
                          int i0, int i1, const void *lt, const void *ct, int tables_double, int table_stride,
                          void *zy, void *zc, int z_double, int64_t zy_len, int64_t zc_len, double *check)
{
    last_error = "";
    InputCheck chk;
    int e = input_check_init(&chk, check);
    if (e)
        return e;
    input_check = &chk;
    e = fdgpu_forward(x, out, x_double, n, ch, h, w, hs, vs, i0, i1, lt, ct, tables_double, table_stride, zy, zc,
                      z_double, zy_len, zc_len);
    input_check = NULL;
    if (e == OK)
        check[2] = (double)chk.bad;
    return e;
}

/* ========================================================================================== the two halves
   fdgpu.encode and fdgpu.decode on the CPU, from the round trip's own stage functions (image_T's stages 1 and 4,
   encode_group, decode_group), with the quantized coefficients in between as floats in the torch reference's
   plane layout: coefficient (v, u) (v the vertical frequency) of block (i, j) of a plane at [8 i + v][8 j + u]. */

/* The largest |r q| fdgpu.decode accepts (fdgpu/coefficients.py MAX_DEQUANTIZED): the inverse DCT's int32 first
   pass and its 64-bit second pass hold every sum for it. */
#define MAX_DEQUANTIZED 2048

#define COEF_IO(T)                                                                                              \
    static void store_coef_##T(const i32 *c, T *plane, int cols, long b0, int nb)                              \
    {                                                                                                           \
        const int nbw = cols / 8;                                                                               \
        for (int j = 0; j < nb; j++) {                                                                          \
            const long blk = b0 + j;                                                                            \
            T *p = plane + (blk / nbw) * 8L * cols + (blk % nbw) * 8;                                           \
            for (int v = 0; v < 8; v++)                                                                         \
                for (int u = 0; u < 8; u++)                                                                     \
                    p[(long)v * cols + u] = (T)c[(8 * u + v) * GROUP + j];                                      \
        }                                                                                                       \
    }                                                                                                           \
    static void load_coef_##T(const T *plane, i32 *c, int cols, long b0, int nb)                               \
    {                                                                                                           \
        const int nbw = cols / 8;                                                                               \
        for (int j = 0; j < nb; j++) {                                                                          \
            const long blk = b0 + j;                                                                            \
            const T *p = plane + (blk / nbw) * 8L * cols + (blk % nbw) * 8;                                     \
            for (int v = 0; v < 8; v++)                                                                         \
                for (int u = 0; u < 8; u++)                                                                     \
                    c[(8 * u + v) * GROUP + j] = (i32)p[(long)v * cols + u];                                    \
        }                                                                                                       \
    }                                                                                                           \
    /* 1 unless every value of the plane is an integer with |value * step| <= MAX_DEQUANTIZED (NaN fails) */    \
    static int bad_coef_##T(const T *plane, long rows, int cols, const i32 *q)                                  \
    {                                                                                                           \
        for (long r = 0; r < rows; r++)                                                                         \
            for (int k = 0; k < cols; k++) {                                                                    \
                const double v = (double)plane[r * cols + k];                                                   \
                if (!(v == floor(v) && fabs(v) * q[8 * (r % 8) + k % 8] <= MAX_DEQUANTIZED))                    \
                    return 1;                                                                                   \
            }                                                                                                   \
        return 0;                                                                                               \
    }
COEF_IO(float)
COEF_IO(double)

#define BAD_COEFFICIENT 4 /* fdgpu_decode: a coefficient that is not an integer with |r q| <= MAX_DEQUANTIZED */

/* The pointers, table layout and coefficient planes (qy_len, qc_len values) of the halves' entries (after
   check_batch). */
static int check_halves(const Geo *g, int n, const void *in, const void *out, const void *qc, const void *t0,
                        const void *t1, const void *t2, int tables_double, int table_stride, i64 qy_len, i64 qc_len)
{
    const int ch = g->ch;
    if (qy_len != (i64)n * g->hp * g->wp)
        return bad("qy: expected n * hp * wp luma coefficients (n, 1, hp, wp) for this size and subsampling");
    if (ch == 3 && qc_len != (i64)n * 2 * (g->hp / g->vs) * (g->wp / g->hs))
        return bad("qc: expected n * 2 * (hp / vs) * (wp / hs) chroma coefficients for this size and subsampling");
    if (ch == 1 && qc)
        return bad("qc: expected NULL for a grayscale image");
    if (!in || !out || !t0)
        return bad("inputs, outputs, luma table: expected non-NULL pointers");
    if (ch == 3 && (!qc || !t1 || !t2))
        return bad("chroma coefficients and tables: expected non-NULL pointers for ch = 3");
    if (tables_double != 0 && tables_double != 1)
        return bad("tables_double: expected 0 (float32) or 1 (float64)");
    if (table_stride != 0 && table_stride != 64)
        return bad("table_stride: expected 0 (shared tables) or 64 (one table per image)");
    return OK;
}

/* Loads table i (stride 64, or 0: shared) of src into q/half/recip/tb; 0 when a step is not an integer in
   1..32768. */
static int table_of(const void *src, int dbl, int stride, int i, i32 *q, float *half, float *recip, Table *tb)
{
    const void *t = (const char *)src + (long)i * stride * (dbl ? 8 : 4);
    tb->wide = 0;
    if (!load_table(t, dbl, q, half, recip, &tb->wide))
        return 0;
    tb->q = q, tb->half = half, tb->recip = recip;
    return 1;
}

static void encode_plane(const u8 *plane, int rows, int cols, const Table *tb, i32 *scratch, void *dst, int dbl)
{
    const long nblocks = (long)(rows / 8) * (cols / 8);
    i32 *a = scratch, *b = scratch + 64L * GROUP, *c = scratch + 128L * GROUP;
    for (long b0 = 0; b0 < nblocks; b0 += GROUP) {
        const int nb = nblocks - b0 < GROUP ? (int)(nblocks - b0) : GROUP;
        encode_group(plane, cols, b0, nb, tb, a, b, c, NULL, 0, nblocks);
        if (dbl)
            store_coef_double(c, (double *)dst, cols, b0, nb);
        else
            store_coef_float(c, (float *)dst, cols, b0, nb);
    }
}

static void decode_plane(u8 *plane, int rows, int cols, const Table *tb, i32 *scratch, const void *src, int dbl)
{
    const long nblocks = (long)(rows / 8) * (cols / 8);
    i32 *a = scratch, *b = scratch + 64L * GROUP, *c = scratch + 128L * GROUP;
    for (long b0 = 0; b0 < nblocks; b0 += GROUP) {
        const int nb = nblocks - b0 < GROUP ? (int)(nblocks - b0) : GROUP;
        if (dbl)
            load_coef_double((const double *)src, c, cols, b0, nb);
        else
            load_coef_float((const float *)src, c, cols, b0, nb);
        decode_group(plane, cols, b0, nb, tb, a, b, c);
    }
}

/* fdgpu.encode of images [i0, i1) of x (n, ch, h, w): the quantized coefficients into qy (n, 1, hp, wp) and qc
   (n, 2, hp / vs, wp / hs) (ch = 3), in x's float type, qy_len and qc_len values long (checked). Tables as in
   fdgpu_forward. Returns 0; 1 when a step is
   not an integer in 1..32768 (nothing written); 2 out of memory; 3 invalid arguments (fdgpu_error() says which;
   nothing read or written). */
int fdgpu_encode(const void *x, int x_double, int n, int ch, int h, int w, int hs, int vs, int i0, int i1,
                 const void *lt, const void *ct, int tables_double, int table_stride, void *qy, void *qc,
                 int64_t qy_len, int64_t qc_len)
{
    last_error = "";
    int rc = check_batch(n, ch, h, w, hs, vs, i0, i1, x_double);
    if (rc)
        return rc;
    Geo g = make_geo(ch, h, w, hs, vs);
    if ((rc = check_halves(&g, n, x, qy, qc, lt, ct, ct, tables_double, table_stride, qy_len, qc_len)))
        return rc;
    i32 q[2][64];
    float half[2][64], recip[2][64];
    Table tabs[2];
    for (int i = i0; i < (table_stride ? i1 : i0 + 1); i++) /* every table first: nothing written on failure */
        for (int t = 0; t < (ch == 3 ? 2 : 1); t++)
            if (!table_of(t ? ct : lt, tables_double, table_stride, i, q[t], half[t], recip[t], &tabs[t]))
                return BAD_STEP;
    u8 *buf = ensure_scratch(scratch_bytes(&g, 1));
    if (!buf)
        return NO_MEMORY;
    const long xs = (long)ch * h * w, ly = (long)g.hp * g.wp, lc = (long)(g.hp / g.vs) * (g.wp / g.hs);
    const int eb = x_double ? 8 : 4;
    i32 *codec = (i32 *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    u8 *Y = (u8 *)(codec + 3 * 64L * GROUP + ROWS * ((long)g.wp + 8)), *Cb = Y + ly, *Cr = Cb + lc;
    for (int i = i0; i < i1; i++) {
        for (int t = 0; t < (ch == 3 ? 2 : 1); t++)
            table_of(t ? ct : lt, tables_double, table_stride, table_stride ? i : 0, q[t], half[t], recip[t],
                     &tabs[t]);
        if (x_double)
            image_double((const double *)x + i * xs, NULL, &g, &tabs[0], &tabs[1], NULL, NULL, 0, Y, Cb, Cr, codec, 1);
        else
            image_float((const float *)x + i * xs, NULL, &g, &tabs[0], &tabs[1], NULL, NULL, 0, Y, Cb, Cr, codec, 1);
        encode_plane(Y, g.hp, g.wp, &tabs[0], codec, (char *)qy + i * ly * eb, x_double);
        if (ch == 3) {
            encode_plane(Cb, g.hp / g.vs, g.wp / g.hs, &tabs[1], codec, (char *)qc + 2 * i * lc * eb, x_double);
            encode_plane(Cr, g.hp / g.vs, g.wp / g.hs, &tabs[1], codec, (char *)qc + (2 * i + 1) * lc * eb,
                         x_double);
        }
    }
    return 0;
}

/* fdgpu.decode of images [i0, i1): quantized coefficients qy (n, 1, hp, wp) and qc (n, 2, hp / vs, wp / hs)
   (ch = 3), float32 or float64 by q_double, with their lengths in values qy_len, qc_len (checked against the
   size and subsampling), into out (n, ch, h, w) of the same type. Tables ly, lcb, lcr (Cb and Cr may differ) as
   in fdgpu_forward. Returns 0; 1 when a step is not an integer in 1..32768; 2 out of memory;
   3 invalid arguments (fdgpu_error() says which); 4 (BAD_COEFFICIENT) when a coefficient is not an integer with
   |r q| <= MAX_DEQUANTIZED. Nothing is written unless it returns 0. */
int fdgpu_decode(const void *qy, const void *qc, int q_double, void *out, int n, int ch, int h, int w, int hs, int vs,
                 int i0, int i1, const void *ly, const void *lcb, const void *lcr, int tables_double, int table_stride,
                 int64_t qy_len, int64_t qc_len)
{
    last_error = "";
    int rc = check_batch(n, ch, h, w, hs, vs, i0, i1, q_double);
    if (rc)
        return rc;
    Geo g = make_geo(ch, h, w, hs, vs);
    if ((rc = check_halves(&g, n, qy, out, qc, ly, lcb, lcr, tables_double, table_stride, qy_len, qc_len)))
        return rc;
    const int np = ch == 3 ? 3 : 1;
    const void *src[3] = {ly, lcb, lcr};
    i32 q[3][64];
    float half[3][64], recip[3][64];
    Table tabs[3];
    const long ly_ = (long)g.hp * g.wp, lc = (long)(g.hp / g.vs) * (g.wp / g.hs);
    const int eb = q_double ? 8 : 4;
    for (int i = i0; i < i1; i++) /* every table and coefficient first: nothing written on failure */
        for (int t = 0; t < np; t++) {
            if (!table_of(src[t], tables_double, table_stride, table_stride ? i : 0, q[t], half[t], recip[t],
                          &tabs[t]))
                return BAD_STEP;
            const char *plane = t == 0 ? (const char *)qy + i * ly_ * eb : (const char *)qc + (2 * i + t - 1) * lc * eb;
            const long rows = t == 0 ? g.hp : g.hp / g.vs;
            const int cols = t == 0 ? g.wp : g.wp / g.hs;
            if (q_double ? bad_coef_double((const double *)plane, rows, cols, q[t])
                         : bad_coef_float((const float *)plane, rows, cols, q[t]))
                return BAD_COEFFICIENT;
        }
    u8 *buf = ensure_scratch(scratch_bytes(&g, 1));
    if (!buf)
        return NO_MEMORY;
    const long os = (long)ch * h * w;
    i32 *codec = (i32 *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    u8 *Y = (u8 *)(codec + 3 * 64L * GROUP + ROWS * ((long)g.wp + 8)), *Cb = Y + ly_, *Cr = Cb + lc;
    u8 *planes[3] = {Y, Cb, Cr};
    for (int i = i0; i < i1; i++) {
        for (int t = 0; t < np; t++) {
            table_of(src[t], tables_double, table_stride, table_stride ? i : 0, q[t], half[t], recip[t], &tabs[t]);
            tabs[t].wide = 1; /* |r q| up to MAX_DEQUANTIZED: the second pass's sums need 64 bits */
            const char *plane = t == 0 ? (const char *)qy + i * ly_ * eb : (const char *)qc + (2 * i + t - 1) * lc * eb;
            decode_plane(planes[t], t == 0 ? g.hp : g.hp / g.vs, t == 0 ? g.wp : g.wp / g.hs, &tabs[t], codec, plane,
                         q_double);
        }
        if (q_double)
            image_double(NULL, (double *)out + i * os, &g, &tabs[0], &tabs[1], NULL, NULL, 0, Y, Cb, Cr, codec, 4);
        else
            image_float(NULL, (float *)out + i * os, &g, &tabs[0], &tabs[1], NULL, NULL, 0, Y, Cb, Cr, codec, 4);
    }
    return 0;
}

/* ========================================================================================== file sizes
   fdgpu.jpeg_size on the CPU: the encoder's half (image_T's stage 1, encode_group) straight into the blocks that
   csrc/entropy.c's coder reads, in the scan's order and libjpeg's layout (int16, zigzag order), without the
   coefficient planes of fdgpu_encode in between. */

/* csrc/entropy.c (the same library, not exported) */
int fdgpu_entropy_blocks(const int16_t *blocks, long nmcu, int luma, int color, int optimize, int64_t out[5]);

/* The row of quantize's layout (8 u + v: u horizontal, v vertical frequency) holding zigzag coefficient k: the
   natural order of T.81 Figure A.6 transposed (tests/test_size.py checks the sizes this layout gives). */
static const int ZIGZAG_ROW[64] = {0,  8,  1,  2,  9,  16, 24, 17, 10, 3,  4,  11, 18, 25, 32, 40,
                                   33, 26, 19, 12, 5,  6,  13, 20, 27, 34, 41, 48, 56, 49, 42, 35,
                                   28, 21, 14, 7,  15, 22, 29, 36, 43, 50, 57, 58, 51, 44, 37, 30,
                                   23, 31, 38, 45, 52, 59, 60, 53, 46, 39, 47, 54, 61, 62, 55, 63};

/* One group's quantized coefficients (quantize's layout: cf[(8 u + v) GROUP + j]) into blocks of 64 int16 in
   zigzag order, block j at dst + 64 pos[j]: per block loads along the zigzag and contiguous stores (0.288 -> 0.274
   ms per 299x299 image in fdgpu.jpeg_size against 64 stores scattered over the group per coefficient; AVX-512
   gathers gave no more). */
static void store_zigzag(const i32 *c, int nb, const long *pos, int16_t *dst)
{
    for (int j = 0; j < nb; j++) {
        int16_t *restrict blk = dst + pos[j] * 64;
        const i32 *restrict cj = c + j;
        for (int k = 0; k < 64; k++)
            blk[k] = (int16_t)cj[ZIGZAG_ROW[k] * GROUP];
    }
}

/* Every block of one image's planes (stage 1's Y, Cb, Cr) in the order the scan codes them (MCU by MCU: the
   hs x vs luma blocks row by row, Cb, Cr; one component: raster order), GROUP blocks of a plane at a time through
   the forward's encode_group. The luma blocks beyond the image's ceil(h / 8) x ceil(w / 8) become libjpeg's
   dummy blocks (jccoefct.c): AC zero, DC that of the last real block on the left or, in a dummy row, of the last
   block of the row above within the same MCU. blocks: (hp / 8 / vs) * (wp / 8 / hs) * bpm blocks. */
static void encode_scan(const Geo *g, const u8 *Y, const u8 *Cb, const u8 *Cr, const Table *lt, const Table *ct,
                        i32 *codec, int16_t *blocks)
{
    const int color = g->ch == 3, hs = g->hs, vs = g->vs, luma = hs * vs, bpm = luma + 2 * color;
    const int rows = g->hp / 8, cols = g->wp / 8, mcu_cols = cols / hs;
    const int real_rows = (g->h + 7) / 8, real_cols = (g->w + 7) / 8;
    i32 *a = codec, *b = codec + 64L * GROUP, *c = codec + 128L * GROUP;
    long pos[GROUP]; /* hs, vs: 1 or 2 (a division by them is a shift) */
    const long n_luma = (long)rows * cols;
    for (long b0 = 0; b0 < n_luma; b0 += GROUP) {
        const int nb = n_luma - b0 < GROUP ? (int)(n_luma - b0) : GROUP;
        encode_group(Y, g->wp, b0, nb, lt, a, b, c, NULL, 0, 0);
        for (long j = 0, r = b0 / cols, k = b0 % cols; j < nb; j++, k = k + 1 < cols ? k + 1 : 0, r += k == 0)
            pos[j] = ((r >> (vs - 1)) * mcu_cols + (k >> (hs - 1))) * bpm + (r & (vs - 1)) * hs + (k & (hs - 1));
        store_zigzag(c, nb, pos, blocks);
    }
#define LUMA(r, k) (blocks + ((((long)(r) / vs) * mcu_cols + (k) / hs) * bpm + ((r) % vs) * hs + (k) % hs) * 64)
    for (int r = 0; r < rows; r++)
        for (int k = r < real_rows ? real_cols : 0; k < cols; k++) {
            int16_t *blk = LUMA(r, k);
            const int16_t dc = r < real_rows ? LUMA(r, real_cols - 1)[0] : LUMA(r - 1, k / hs * hs + hs - 1)[0];
            memset(blk, 0, 64 * sizeof(int16_t));
            blk[0] = dc;
        }
#undef LUMA
    if (!color)
        return;
    const long n_chroma = (long)(rows / vs) * mcu_cols; /* one block per MCU, none of them a dummy */
    for (int t = 0; t < 2; t++)
        for (long b0 = 0; b0 < n_chroma; b0 += GROUP) {
            const int nb = n_chroma - b0 < GROUP ? (int)(n_chroma - b0) : GROUP;
            encode_group(t ? Cr : Cb, g->wp / hs, b0, nb, ct, a, b, c, NULL, 0, 0);
            for (int j = 0; j < nb; j++)
                pos[j] = (b0 + j) * bpm + luma + t;
            store_zigzag(c, nb, pos, blocks);
        }
}

/* fdgpu.jpeg_size's entropy-coded segments of images [i0, i1) of x (n, ch, h, w), float32 or float64 (x_double),
   element (i, k, r, c) at x[i xs[0] + k xs[1] + r xs[2] + c xs[3]] (xs: strides in elements, >= 0; NULL:
   contiguous; an image stored channels-last is read in place), with the tables of fdgpu_forward (steps checked: 1 when one is not an integer in 1..32768) and
   optimize 0 (the standard Huffman tables) or 1 (per-image optimal tables): out (n, 5), out_len = 5 n values, row
   i: the segment's bytes, then with optimize the number of symbols of the optimal DC luma, AC luma, DC chroma and
   AC chroma tables (0 where unused), as fdgpu_jpeg_entropy (csrc/entropy.c) gives them from coefficient grids.
   check: NULL, or validate=True's check as in fdgpu_forward_checked (check[2] receives the number of values outside
   [check[0], check[1]] or NaN). Returns 0; 1 (a step), 2 out of memory, 3 invalid arguments (fdgpu_error() says
   which; nothing read or written), 4 when a quantized coefficient is outside baseline JPEG's range (rows of the
   images before it are written). */
int fdgpu_jpeg_size(const void *x, const int64_t *xs, int x_double, int n, int ch, int h, int w, int hs, int vs,
                    int i0, int i1, const void *lt, const void *ct, int tables_double, int table_stride, int optimize,
                    int64_t *out, int64_t out_len, double *check)
{
    last_error = "";
    int e = check_batch(n, ch, h, w, hs, vs, i0, i1, x_double);
    if (e)
        return e;
    if (!x || !out)
        return bad("x, out: expected non-NULL pointers");
    if (xs && (xs[0] < 0 || xs[1] < 0 || xs[2] < 0 || xs[3] < 0))
        return bad("xs: expected strides >= 0 (in elements) or NULL (contiguous)");
    if (out_len != 5 * (int64_t)n)
        return bad("out_len: expected 5 * n values (n, 5)");
    if (!lt || (ch == 3 && !ct))
        return bad("lt, ct: expected a luma table, and a chroma table for ch = 3");
    if (tables_double != 0 && tables_double != 1)
        return bad("tables_double: expected 0 (float32) or 1 (float64)");
    if (table_stride != 0 && table_stride != 64)
        return bad("table_stride: expected 0 (one shared table) or 64 (one table per image)");
    if (optimize != 0 && optimize != 1)
        return bad("optimize: expected 0 (standard Huffman tables) or 1 (optimal tables)");
    InputCheck chk;
    if (check && (e = input_check_init(&chk, check)))
        return e;
    Geo g = make_geo(ch, h, w, hs, vs);
    if (xs)
        g.sc = (long)xs[1], g.sh = (long)xs[2], g.sw = (long)xs[3];
    i32 q[2][64];
    float half[2][64], recip[2][64];
    Table tabs[2];
    for (int i = i0; i < (table_stride ? i1 : i0 + 1); i++) /* every table first: nothing written on failure */
        for (int t = 0; t < (ch == 3 ? 2 : 1); t++)
            if (!table_of(t ? ct : lt, tables_double, table_stride, i, q[t], half[t], recip[t], &tabs[t]))
                return BAD_STEP;
    const long ly = (long)g.hp * g.wp, lc = (long)(g.hp / g.vs) * (g.wp / g.hs);
    const long nmcu = (long)(g.hp / 8 / g.vs) * (g.wp / 8 / g.hs);
    const int luma = g.hs * g.vs, bpm = luma + (ch == 3 ? 2 : 0);
    u8 *buf = ensure_scratch(scratch_bytes(&g, 1) + 64 + (size_t)nmcu * bpm * 64 * sizeof(int16_t));
    if (!buf)
        return NO_MEMORY;
    const long si = xs ? (long)xs[0] : (long)ch * h * w;
    i32 *codec = (i32 *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    u8 *Y = (u8 *)(codec + 3 * 64L * GROUP + ROWS * ((long)g.wp + 8)), *Cb = Y + ly, *Cr = Cb + lc;
    int16_t *blocks = (int16_t *)(((uintptr_t)(Cr + lc) + 63) & ~(uintptr_t)63);
    int rc = OK;
    input_check = check ? &chk : NULL;
    for (int i = i0; i < i1 && rc == OK; i++) {
        for (int t = 0; t < (ch == 3 ? 2 : 1); t++)
            table_of(t ? ct : lt, tables_double, table_stride, table_stride ? i : 0, q[t], half[t], recip[t],
                     &tabs[t]);
        if (x_double)
            image_double((const double *)x + i * si, NULL, &g, &tabs[0], &tabs[1], NULL, NULL, 0, Y, Cb, Cr, codec, 1);
        else
            image_float((const float *)x + i * si, NULL, &g, &tabs[0], &tabs[1], NULL, NULL, 0, Y, Cb, Cr, codec, 1);
        encode_scan(&g, Y, Cb, Cr, &tabs[0], &tabs[1], codec, blocks);
        if (fdgpu_entropy_blocks(blocks, nmcu, luma, ch == 3, optimize, out + 5L * i))
            rc = BAD_COEFFICIENT;
    }
    input_check = NULL;
    if (check && rc == OK)
        check[2] = (double)chk.bad;
    return rc;
}

/* ========================================================================================== the backward
   The vector-Jacobian product of fdgpu/reference/jpeg.py's backward for the ste and soft modes (no table
   gradients): every rounding and clamp straight-through, the coefficient rounding's derivative 1 (ste: the DCT
   and its inverse cancel) or the soft weight 3 (z - round z)**2. Real-valued arithmetic in the gradient's float
   type: equal to the torch reference up to the order of float operations (tests/test_fused.py bounds the
   difference against a float64 reference). */

/* The orthonormal 8x8 DCT-II matrix D[k][n] (as fdgpu/reference/dct.py's dct_matrix), in double */
static double dct_d[8][8];
static pthread_once_t dct_once = PTHREAD_ONCE_INIT; /* built once, whichever thread comes first (no data race) */

static void dct_build(void)
{
    for (int k = 0; k < 8; k++)
        for (int i = 0; i < 8; i++)
            dct_d[k][i] = cos((2 * i + 1) * k * 3.14159265358979323846 / 16) * sqrt(2.0 / 8) * (k ? 1.0 : sqrt(0.5));
}

#define FLOOR_float floorf
#define FLOOR_double floor
#define BACKWARD(T)                                                                                             \
    static inline T round_away_##T(T v) { return v < 0 ? -FLOOR_##T(-v + (T)0.5) : FLOOR_##T(v + (T)0.5); } \
    /* In place on a plane (rows x cols): P_b <- D^T (w(z) * (D P_b D^T)) D for every 8x8 block b. */           \
    static void soft_plane_##T(T *p, int rows, int cols, const T *z, T *wt)                                    \
    {                                                                                                           \
        T d[8][8];                                                                                              \
        for (int k = 0; k < 8; k++)                                                                             \
            for (int i = 0; i < 8; i++)                                                                         \
                d[k][i] = (T)dct_d[k][i];                                                                       \
        const int nbw = cols / 8;                                                                               \
        const long zs = (long)(rows / 8) * nbw;                                                                 \
        for (long m = 0; m < 64 * zs; m++) { /* the soft weights 3 (z - round z)**2, all at once */              \
            const T zz = z[m], e = zz - round_away_##T(zz);                                                     \
            wt[m] = e * e * (T)3.0;                                                                             \
        }                                                                                                       \
        for (int br = 0; br < rows / 8; br++)                                                                   \
            for (int bc = 0; bc < nbw; bc++) {                                                                  \
                T a[8][8], t[8][8];                                                                             \
                T *blk = p + (long)br * 8 * cols + bc * 8;                                                      \
                for (int i = 0; i < 8; i++) /* t = P D^T: t[i][v] = sum_j P[i][j] D[v][j] */                    \
                    for (int v = 0; v < 8; v++) {                                                               \
                        T s = 0;                                                                                \
                        for (int j = 0; j < 8; j++)                                                             \
                            s += blk[(long)i * cols + j] * d[v][j];                                             \
                        t[i][v] = s;                                                                            \
                    }                                                                                           \
                for (int u = 0; u < 8; u++) /* a = D t, weighted */                                             \
                    for (int v = 0; v < 8; v++) {                                                               \
                        T s = 0;                                                                                \
                        for (int i = 0; i < 8; i++)                                                             \
                            s += d[u][i] * t[i][v];                                                             \
                        a[u][v] = s * wt[(8 * u + v) * zs + (long)br * nbw + bc];                               \
                    }                                                                                           \
                for (int u = 0; u < 8; u++) /* t = a D: t[u][j] = sum_v a[u][v] D[v][j] */                      \
                    for (int j = 0; j < 8; j++) {                                                               \
                        T s = 0;                                                                                \
                        for (int v = 0; v < 8; v++)                                                             \
                            s += a[u][v] * d[v][j];                                                             \
                        t[u][j] = s;                                                                            \
                    }                                                                                           \
                for (int i = 0; i < 8; i++) /* P = D^T t */                                                     \
                    for (int j = 0; j < 8; j++) {                                                               \
                        T s = 0;                                                                                \
                        for (int u = 0; u < 8; u++)                                                             \
                            s += d[u][i] * t[u][j];                                                             \
                        blk[(long)i * cols + j] = s;                                                            \
                    }                                                                                           \
            }                                                                                                   \
    }                                                                                                           \
    /* Adjoint of the unscaled 1-D triangle filter times 1/4, along a row: len values g (zero past len, len in    \
       {2n - 1, 2n}) -> n values. q: 2n + 4 scratch. */                                                         \
    static void fancy_adj_row_##T(const T *restrict g, int len, T *restrict out, int n, T *restrict q)          \
    {                                                                                                           \
        q[0] = 0;                                                                                               \
        for (int m = 0; m < len; m++)                                                                           \
            q[m + 1] = g[m];                                                                                    \
        for (int m = len + 1; m < 2 * n + 4; m++)                                                               \
            q[m] = 0;                                                                                           \
        for (int k = 0; k < n; k++) /* q[2k + 1] = g[2k] (even), q[2k + 2] = g[2k + 1] (odd) */                 \
            out[k] = ((q[2 * k + 1] + q[2 * k + 2]) * 3 + q[2 * k + 3] + q[2 * k]) * (T)0.25;                   \
        out[0] += q[1] * (T)0.25;         /* out[0] used c[0] as its left neighbour */                          \
        out[n - 1] += q[2 * n] * (T)0.25; /* out[2n - 1] used c[n - 1] as its right neighbour */                \
    }                                                                                                           \
    /* The same along the columns of rows A[r] (r < len, stride as, width values each) -> C[i] (i < n). */      \
    static void fancy_adj_rows_##T(const T *A, long as, int len, T *C, long cs, int n, int width,               \
                                   const T *zero)                                                               \
    {                                                                                                           \
        for (int i = 0; i < n; i++) {                                                                           \
            const T *restrict e = 2 * i < len ? A + 2L * i * as : zero;                                         \
            const T *restrict o = 2 * i + 1 < len ? A + (2L * i + 1) * as : zero;                               \
            const T *restrict e1 = i + 1 < n && 2 * i + 2 < len ? A + (2L * i + 2) * as : zero;                  \
            const T *restrict om = i >= 1 ? A + (2L * i - 1) * as : zero;                                       \
            const T ce = i == 0 ? 4 : 3, co = i == n - 1 ? 4 : 3;                                               \
            T *restrict c = C + i * cs;                                                                         \
            for (int j = 0; j < width; j++)                                                                     \
                c[j] = (e[j] * ce + o[j] * co + e1[j] + om[j]) * (T)0.25;                                       \
        }                                                                                                       \
    }                                                                                                           \
    static void rgb_grad_##T(const T *restrict gr, const T *restrict gg, const T *restrict gb, T *restrict y,   \
                             T *restrict ub, T *restrict ur, int w)                                             \
    {                                                                                                           \
        for (int c = 0; c < w; c++) {                                                                           \
            y[c] = gr[c] + gg[c] + gb[c];                                                                       \
            ub[c] = gg[c] * (T)-0.34414 + gb[c] * (T)1.772;                                                     \
            ur[c] = gr[c] * (T)1.402 + gg[c] * (T)-0.71414;                                                     \
        }                                                                                                       \
    }                                                                                                           \
    /* v (wp values) -> o (w values): the padded columns fold onto column w - 1; accumulate or store */         \
    static void fold_row_##T(const T *restrict v, T *restrict o, int w, int wp, int add)                        \
    {                                                                                                           \
        T tail = 0;                                                                                             \
        for (int c = w; c < wp; c++)                                                                            \
            tail += v[c];                                                                                       \
        if (add)                                                                                                \
            for (int c = 0; c < w; c++)                                                                         \
                o[c] += v[c];                                                                                   \
        else                                                                                                    \
            for (int c = 0; c < w; c++)                                                                         \
                o[c] = v[c];                                                                                    \
        o[w - 1] += tail;                                                                                       \
    }                                                                                                           \
    /* The YCbCr -> RGB adjoint of one padded row for one RGB channel k, v = my y + mb cbx + mr crx (wp values), \
       folded onto o (w values: the padded columns onto column w - 1), stored or accumulated (add) */           \
    static void ycc_fold_##T(const T *restrict y, const T *restrict cbx, const T *restrict crx, T *restrict o,  \
                             int w, int wp, T my, T mb, T mr, int add)                                          \
    {                                                                                                           \
        T tail = 0;                                                                                             \
        for (int c = w; c < wp; c++)                                                                            \
            tail += my * y[c] + mb * cbx[c] + mr * crx[c];                                                      \
        if (add)                                                                                                \
            for (int c = 0; c < w; c++)                                                                         \
                o[c] += my * y[c] + mb * cbx[c] + mr * crx[c];                                                  \
        else                                                                                                    \
            for (int c = 0; c < w; c++)                                                                         \
                o[c] = my * y[c] + mb * cbx[c] + mr * crx[c];                                                   \
        o[w - 1] += tail;                                                                                       \
    }                                                                                                           \
    static void image_backward_##T(const T *g, T *gx, const Geo *geo, const T *zy, const T *zc, u8 *buf)        \
    {                                                                                                           \
        const int h = geo->h, w = geo->w, hp = geo->hp, wp = geo->wp, hs = geo->hs, vs = geo->vs;               \
        const int hcp = hp / vs, wcp = wp / hs, hc = geo->hc, wc = geo->wc;                                     \
        const long plane = (long)h * w, rs = wp + 8, ts = (long)wc * hp + 16;                                   \
        T *GY = (T *)buf, *CB = GY + (long)hp * wp, *CR = CB + (long)hcp * wcp;                                 \
        T *TB = CR + (long)hcp * wcp, *TR = TB + ts, *row = TR + ts; /* row: 6 rows of rs */                    \
        T *zero = row, *ub = row + rs, *ur = ub + rs, *cbx = ur + rs, *crx = cbx + rs, *q = crx + rs, *wt = q + rs; \
        memset(zero, 0, sizeof(T) * rs);                                                                        \
        for (int r = h; r < hp; r++)                                                                            \
            memset(GY + (long)r * wp, 0, sizeof(T) * wp);                                                       \
        for (int r = 0; r < h; r++)                                                                             \
            memset(GY + (long)r * wp + w, 0, sizeof(T) * (wp - w));                                             \
        if (geo->ch == 1) {                                                                                     \
            for (int r = 0; r < h; r++)                                                                         \
                memcpy(GY + (long)r * wp, g + (long)r * w, sizeof(T) * w);                                      \
        } else {                                                                                                \
            /* row by row: the RGB gradient's Y into GY, its Cb and Cr (ub, ur) at once through the upsampling's \
               adjoint, (h, w) -> (hc, wc), into CB/CR (row stride wcp, zero elsewhere); with vertical fancy    \
               upsampling along the width into TB/TR (h, wc) first, then along the height */                    \
            memset(CB, 0, sizeof(T) * (size_t)hcp * wcp);                                                       \
            memset(CR, 0, sizeof(T) * (size_t)hcp * wcp);                                                       \
            const int fancy = wc > 2 && (hs > 1 || vs > 1);                                                     \
            for (int r = 0; r < h; r++) {                                                                       \
                rgb_grad_##T(g + (long)r * w, g + plane + (long)r * w, g + 2 * plane + (long)r * w,             \
                             GY + (long)r * wp, ub, ur, w);                                                     \
                for (int t = 0; t < 2; t++) {                                                                   \
                    const T *U = t ? ur : ub;                                                                   \
                    T *C = t ? CR : CB;                                                                         \
                    if (hs == 1 && vs == 1)                                                                     \
                        memcpy(C + (long)r * wcp, U, sizeof(T) * w);                                            \
                    else if (!fancy)                                                                            \
                        for (int c = 0; c < w; c++)                                                             \
                            C[(long)(r / vs) * wcp + c / hs] += U[c];                                           \
                    else if (vs == 2)                                                                           \
                        fancy_adj_row_##T(U, w, (t ? TR : TB) + (long)r * wc, wc, q);                           \
                    else                                                                                        \
                        fancy_adj_row_##T(U, w, C + (long)r * wcp, wc, q);                                      \
                }                                                                                               \
            }                                                                                                   \
            if (fancy && vs == 2) {                                                                             \
                fancy_adj_rows_##T(TB, wc, h, CB, wcp, hc, wc, zero);                                           \
                fancy_adj_rows_##T(TR, wc, h, CR, wcp, hc, wc, zero);                                           \
            }                                                                                                   \
            if (zc) { /* soft: on the padded chroma planes, then fold rows hc.. onto row hc - 1 */              \
                const long zcs = 64L * (hcp / 8) * (wcp / 8);                                                   \
                soft_plane_##T(CB, hcp, wcp, zc, wt);                                                               \
                soft_plane_##T(CR, hcp, wcp, zc + zcs, wt);                                                         \
                for (int t = 0; t < 2; t++) {                                                                   \
                    T *C = t ? CR : CB;                                                                         \
                    for (int r = hc; r < hcp; r++)                                                              \
                        for (int c = 0; c < wcp; c++)                                                           \
                            C[(long)(hc - 1) * wcp + c] += C[(long)r * wcp + c];                                \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        if (zy)                                                                                                 \
            soft_plane_##T(GY, hp, wp, zy, wt);                                                                     \
        /* YCbCr -> RGB adjoint over the padded plane, folding padded columns and rows back (edge padding) */   \
        const T inv = (T)1.0 / (T)(hs * vs);                                                                    \
        static const double M[3][3] = {{0.29900, -0.16874, 0.50000}, {0.58700, -0.33126, -0.41869},             \
                                       {0.11400, 0.50000, -0.08131}};                                           \
        for (int r = 0; r < hp; r++) {                                                                          \
            const T *y = GY + (long)r * wp;                                                                     \
            const int last = r >= h; /* rows past h are summed into row h - 1 */                                \
            T *orow = gx + (long)(last ? h - 1 : r) * w;                                                        \
            if (geo->ch == 1) {                                                                                 \
                fold_row_##T(y, orow, w, wp, last);                                                             \
                continue;                                                                                       \
            }                                                                                                   \
            if (r < hc * vs) {                                                                                  \
                const T *cb = CB + (long)(r / vs) * wcp, *cr = CR + (long)(r / vs) * wcp;                       \
                if (hs == 2)                                                                                    \
                    for (int k = 0; k < wcp; k++) {                                                             \
                        cbx[2 * k] = cbx[2 * k + 1] = cb[k] * inv;                                              \
                        crx[2 * k] = crx[2 * k + 1] = cr[k] * inv;                                              \
                    }                                                                                           \
                else                                                                                            \
                    for (int k = 0; k < wcp; k++) {                                                             \
                        cbx[k] = cb[k] * inv;                                                                   \
                        crx[k] = cr[k] * inv;                                                                   \
                    }                                                                                           \
            } else {                                                                                            \
                memset(cbx, 0, sizeof(T) * wp);                                                                 \
                memset(crx, 0, sizeof(T) * wp);                                                                 \
            }                                                                                                   \
            for (int k = 0; k < 3; k++)                                                                         \
                ycc_fold_##T(y, cbx, crx, orow + k * plane, w, wp, (T)M[k][0], (T)M[k][1], (T)M[k][2], last);   \
        }                                                                                                       \
    }
BACKWARD(float)
BACKWARD(double)

/* The ste (zy = zc = NULL) or soft backward of images [i0, i1) of a batch: g and gx (n, ch, h, w) contiguous, in
   float32 or float64 (dbl); zy, zc the saved quotients of fdgpu_forward in the same type, with their lengths in
   values zy_len, zc_len (checked against this size and subsampling). Returns 0, 2 when out of memory, or 3 when an
   argument is invalid (nothing is read or written then; fdgpu_error() says which). */
int fdgpu_backward(const void *g, void *gx, int dbl, int n, int ch, int h, int w, int hs, int vs, int i0, int i1,
                   const void *zy, const void *zc, int64_t zy_len, int64_t zc_len)
{
    last_error = "";
    int e = check_batch(n, ch, h, w, hs, vs, i0, i1, dbl);
    if (e)
        return e;
    if (!g || !gx)
        return bad("g, gx: expected non-NULL pointers");
    Geo geo = make_geo(ch, h, w, hs, vs);
    if ((e = check_state(&geo, n, zy, zy_len, zc, zc_len)))
        return e;
    pthread_once(&dct_once, dct_build);
    const size_t tb = dbl ? 8 : 4;
    const size_t hcp = geo.hp / geo.vs, wcp = geo.wp / geo.hs;
    /* image_backward's planes: GY, CB, CR, TB, TR, 6 rows, the soft weights */
    u8 *buf = ensure_scratch(tb * ((size_t)geo.hp * geo.wp + 2 * hcp * wcp + 2 * ((size_t)geo.wc * geo.hp + 16)
                                   + 6 * ((size_t)geo.wp + 8) + (size_t)geo.hp * geo.wp) + 64);
    if (!buf)
        return NO_MEMORY;
    const long xs = (long)ch * h * w;
    const long zys = 64L * (geo.hp / 8) * (geo.wp / 8), zcs = 2 * 64L * (hcp / 8) * (wcp / 8);
    for (int i = i0; i < i1; i++) {
        if (dbl)
            image_backward_double((const double *)g + i * xs, (double *)gx + i * xs, &geo,
                                  zy ? (const double *)zy + i * zys : NULL, zc ? (const double *)zc + i * zcs : NULL,
                                  buf);
        else
            image_backward_float((const float *)g + i * xs, (float *)gx + i * xs, &geo,
                                 zy ? (const float *)zy + i * zys : NULL, zc ? (const float *)zc + i * zcs : NULL,
                                 buf);
    }
    return OK;
}
