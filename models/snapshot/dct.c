/* gopwatch: a still's DCT coefficients, read from memory by libjpeg(-turbo) as its Huffman
 * decoder produces them, dequantised, and written straight into the network's layout:
 * (block rows, block cols, keep) float32 per component (channels-last: a block's kept values
 * side by side), channel k holding coefficient order[k] (natural index u*8+v). Optionally each
 * value v becomes sign(v) * log(1 + |v|), the network's input scale, in the same pass. And
 * optionally the luma at a quarter of the size: each luma block's four 4x4 area means, from the
 * eight lowest coefficients that contribute to them (what the QR reader looks at).
 *
 * Streaming, not jpeg_read_coefficients: that one stores every block of the picture in a
 * whole-image array first, which cost more than libjpeg-turbo's full decode to pixels. Here the
 * decoder runs with raw output at 1/4 scale (any scale past 1/8: at 1/8 libjpeg-turbo skips
 * storing the AC coefficients) and its inverse DCT is replaced by `gw_block`, which receives each
 * block's quantised coefficients in turn and writes the kept ones; no pixel is produced. A
 * block's place comes from the row pointer and column libjpeg hands the inverse DCT, relative
 * to the row buffer of the current iMCU row. Progressive files go through the same hook once
 * libjpeg has gathered all their scans.
 *
 * Built by `make setup` (gcc, libjpeg62-turbo-dev) into libgwdct.so.1 and loaded with ctypes by
 * models/snapshot/jpeg.py; without it jpeglib reads the coefficients instead. */
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jpegint.h>

struct gw_error {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int warned;
};

static void gw_fail(j_common_ptr c) {
    struct gw_error *e = (struct gw_error *)c->err;
    (*c->err->format_message)(c, e->message);
    longjmp(e->jump, 1);
}

static void gw_message(j_common_ptr c, int level) {
    struct gw_error *e = (struct gw_error *)c->err;
    if (level < 0 && !e->warned) { /* corrupt data: libjpeg would carry on, a still is refused */
        (*c->err->format_message)(c, e->message);
        e->warned = 1;
    }
}

/* A dequantised value v is an integer (a coefficient times its step), so sign(v) * log(1 + |v|)
 * is looked up in one table of both signs (no branch on the sign: a mispredicted one cost more
 * than the logarithm), filled once when the library is loaded; magnitudes past any 8-bit JPEG's
 * range are computed. */
#define LOG_RANGE 4096
static float SIGNED_LOG[2 * LOG_RANGE + 1];
__attribute__((constructor)) static void gw_fill_log_table(void) {
    for (int v = -LOG_RANGE; v <= LOG_RANGE; v++)
        SIGNED_LOG[v + LOG_RANGE] = copysignf(log1pf(fabsf((float)v)), (float)v);
}
#define MAX_ROWS 64 /* row pointers per component and iMCU row: v_samp (<= 2) * scaled size (<= 16) */
#define PLANES 3     /* grey or Y, Cb, Cr (models/snapshot/jpeg.py refuses anything else first) */

/* A block's four 4x4 area means take eight coefficients (natural index v*8+u): frequencies 0, 1
 * and 3 (even ones above 0 sum to zero over half a block, and the rest are past the 16 lowest).
 * An odd frequency's half-block sum changes sign between the halves, so the means are the DC term
 * plus or minus a horizontal, a vertical and a diagonal sum; weight[k] is coefficient k's share
 * of the top-left mean: 0, (0,1), (1,0), (1,1), (0,3), (3,0), (3,1), (1,3). */
#define QUARTER_TERMS 8
static const int QUARTER_FROM[QUARTER_TERMS] = {0, 1, 8, 9, 3, 24, 25, 11};

static unsigned char to_byte(float v) {
    return v <= 0.0f ? 0 : v >= 255.0f ? 255 : (unsigned char)(v + 0.5f);
}

struct gw_reader {
    float **planes;
    unsigned char *quarter;               /* NULL, or (2 * rows[0]) x (2 * cols[0]) bytes */
    float weight[QUARTER_TERMS];          /* each term's share of the top-left area mean */
    const int *rows, *cols, *order;
    int keep, log_scale;
    JSAMPARRAY base[PLANES]; /* the row buffer handed to libjpeg for the current iMCU row */
    long first_row[PLANES];  /* its first block row, per component */
};

static float signed_log(int v) {
    return (unsigned)(v + LOG_RANGE) <= 2 * LOG_RANGE ? SIGNED_LOG[v + LOG_RANGE]
                                                      : copysignf(log1pf(fabsf((float)v)), (float)v);
}

static void gw_block(j_decompress_ptr info, jpeg_component_info *comp, JCOEFPTR coef,
                     JSAMPARRAY out, JDIMENSION out_col) {
    struct gw_reader *s = (struct gw_reader *)info->client_data;
    const int ci = comp->component_index, scale = comp->DCT_scaled_size;
    if (ci >= PLANES) return;
    const long r = s->first_row[ci] + (long)(out - s->base[ci]) / scale;
    const long c = (long)out_col / scale;
    if (r < 0 || r >= s->rows[ci] || c >= s->cols[ci] || comp->quant_table == NULL) return;
    const UINT16 *q = comp->quant_table->quantval;
    if (ci == 0 && s->quarter != NULL) { /* quarter_luma in models/snapshot/jpeg.py, the same sums */
        const float *w = s->weight, m = 128.0f + w[0] * (float)(coef[0] * q[0]);
        float h = w[1] * (float)(coef[1] * q[1]) + w[4] * (float)(coef[3] * q[3]);
        float v = w[2] * (float)(coef[8] * q[8]) + w[5] * (float)(coef[24] * q[24]);
        float d = w[3] * (float)(coef[9] * q[9]) + w[6] * (float)(coef[25] * q[25])
                  + w[7] * (float)(coef[11] * q[11]);
        unsigned char *o = s->quarter + 2 * r * (2 * s->cols[0]) + 2 * c;
        o[0] = to_byte(m + h + v + d), o[1] = to_byte(m - h + v - d);
        o += 2 * s->cols[0];
        o[0] = to_byte(m + h - v - d), o[1] = to_byte(m - h - v + d);
    }
    float *at = s->planes[ci] + (r * s->cols[ci] + c) * s->keep;
    const int keep = s->keep, *order = s->order;
    if (s->log_scale)
        for (int k = 0; k < keep; k++) at[k] = signed_log(coef[order[k]] * q[order[k]]);
    else
        for (int k = 0; k < keep; k++) at[k] = (float)(coef[order[k]] * q[order[k]]);
}

/* The calling convention's version: models/snapshot/jpeg.py loads only a library that matches it
 * (a stale build would be handed arguments it does not expect). */
int gw_version(void) { return 2; }

/* Returns 0, or 1 with a one-line reason in `reason`. `planes` has one pointer per component,
 * each to rows[i] * cols[i] * keep floats; rows and cols are the caller's expectation from the
 * frame header, checked against libjpeg's. `order` holds `keep` natural indices (0..63).
 * `quarter`, when not NULL, receives the quarter-size luma, (2 * rows[0]) x (2 * cols[0]) bytes. */
int gw_read_dct(const unsigned char *data, unsigned long size, int components, float **planes,
                const int *rows, const int *cols, int keep, const int *order, int log_scale,
                unsigned char *quarter, char *reason, int reason_len) {
    struct jpeg_decompress_struct info;
    struct gw_error err;
    struct gw_reader *s = calloc(1, sizeof *s);
    JSAMPROW pointers[PLANES][MAX_ROWS];
    JSAMPARRAY image[PLANES];
    if (s == NULL) {
        snprintf(reason, reason_len, "out of memory");
        return 1;
    }
    if (keep < 1 || keep > DCTSIZE2 || components < 1 || components > PLANES) {
        snprintf(reason, reason_len, "bad arguments");
        free(s);
        return 1;
    }
    memset(&err, 0, sizeof err);
    info.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = gw_fail;
    err.mgr.emit_message = gw_message;
    if (setjmp(err.jump)) {
        snprintf(reason, reason_len, "%s", err.message);
        jpeg_destroy_decompress(&info);
        free(s);
        return 1;
    }
    jpeg_create_decompress(&info);
    jpeg_mem_src(&info, data, size);
    jpeg_read_header(&info, TRUE);
    if (info.num_components != components) {
        snprintf(reason, reason_len, "%d components, the header said %d", info.num_components, components);
        jpeg_destroy_decompress(&info);
        free(s);
        return 1;
    }
    s->planes = planes, s->rows = rows, s->cols = cols, s->order = order;
    s->keep = keep, s->log_scale = log_scale, s->quarter = quarter;
    for (int k = 0; k < QUARTER_TERMS; k++) { /* orthonormal DCT basis, averaged over the top-left 4x4 */
        const int fv = QUARTER_FROM[k] / 8, fu = QUARTER_FROM[k] % 8;
        double top = 0, left = 0;
        for (int x = 0; x < 4; x++) {
            top += (fv ? 0.5 : 0.5 / sqrt(2.0)) * cos((2 * x + 1) * fv * M_PI / 16) / 4;
            left += (fu ? 0.5 : 0.5 / sqrt(2.0)) * cos((2 * x + 1) * fu * M_PI / 16) / 4;
        }
        s->weight[k] = (float)(top * left);
    }
    info.client_data = s;
    info.raw_data_out = TRUE;
    info.scale_num = 2, info.scale_denom = 8;
    jpeg_start_decompress(&info);
    /* the row buffer: libjpeg passes pointers into it to the inverse DCT, which writes nothing,
     * so every row pointer may share one line of scratch */
    JSAMPROW scratch = (*info.mem->alloc_small)((j_common_ptr)&info, JPOOL_IMAGE, info.output_width + 64);
    for (int ci = 0; ci < components; ci++) {
        jpeg_component_info *comp = &info.comp_info[ci];
        /* libjpeg latches a component's table when a scan first carries it; by now every scan
         * has been read (a multi-scan file) or begun (a single scan). None: no scan has it. */
        if (comp->quant_table == NULL) {
            snprintf(reason, reason_len, "component %d is in no scan", ci);
            jpeg_destroy_decompress(&info);
            free(s);
            return 1;
        }
        if ((int)comp->height_in_blocks != rows[ci] || (int)comp->width_in_blocks != cols[ci]
            || comp->v_samp_factor * comp->DCT_scaled_size > MAX_ROWS) {
            snprintf(reason, reason_len, "component %d has %ux%u blocks, expected %dx%d", ci,
                     comp->height_in_blocks, comp->width_in_blocks, rows[ci], cols[ci]);
            jpeg_destroy_decompress(&info);
            free(s);
            return 1;
        }
        info.idct->inverse_DCT[ci] = gw_block;
        for (int k = 0; k < MAX_ROWS; k++) pointers[ci][k] = scratch;
        image[ci] = s->base[ci] = pointers[ci];
    }
    const int lines = info.max_v_samp_factor * info.min_DCT_scaled_size;
    for (long imcu = 0; info.output_scanline < info.output_height; imcu++) {
        for (int ci = 0; ci < components; ci++) s->first_row[ci] = imcu * info.comp_info[ci].v_samp_factor;
        if (jpeg_read_raw_data(&info, image, lines) == 0) break;
    }
    int warned = err.warned;
    if (!warned) jpeg_finish_decompress(&info);
    warned = err.warned;
    if (warned) snprintf(reason, reason_len, "%s", err.message);
    jpeg_destroy_decompress(&info);
    free(s);
    return warned;
}
