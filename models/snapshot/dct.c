/* gopwatch: a still's DCT coefficients, read from memory by libjpeg(-turbo)'s own
 * jpeg_read_coefficients, dequantised, and written straight into the network's layout:
 * (64, block rows, block cols) float32 per component, coefficient u*8+v in natural order.
 * Optionally each value v becomes sign(v) * log(1 + |v|), the network's input scale, in the same
 * pass (zeros, most of a still's coefficients, stay zero without a log).
 *
 * Built by `make setup` (gcc, libjpeg62-turbo-dev) into libgwdct.so.1 and loaded with ctypes by
 * models/snapshot/jpeg.py; without it jpeglib reads the coefficients instead. */
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>

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

/* sign(v) * log(1 + |v|) for an integer v (a quantised coefficient times its step): a table
 * for the common small magnitudes, log1pf past it */
#define LOG_TABLE 4096
static float log_table[LOG_TABLE];
static int log_ready = 0;

static inline float scaled(int v) {
    int a = v < 0 ? -v : v;
    float m = a < LOG_TABLE ? log_table[a] : log1pf((float)a);
    return v < 0 ? -m : m;
}

/* Returns 0, or 1 with a one-line reason in `reason`. `planes` has one pointer per component,
 * each to 64 * rows[i] * cols[i] floats; rows and cols are the caller's expectation from the
 * frame header, checked against libjpeg's. */
int gw_read_dct(const unsigned char *data, unsigned long size, int components, float **planes,
                const int *rows, const int *cols, int log_scale, char *reason, int reason_len) {
    if (log_scale && !log_ready) { /* idempotent: concurrent first calls write the same values */
        for (int a = 0; a < LOG_TABLE; a++) log_table[a] = log1pf((float)a);
        log_ready = 1;
    }
    struct jpeg_decompress_struct info;
    struct gw_error err;
    memset(&err, 0, sizeof err);
    info.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = gw_fail;
    err.mgr.emit_message = gw_message;
    if (setjmp(err.jump)) {
        snprintf(reason, reason_len, "%s", err.message);
        jpeg_destroy_decompress(&info);
        return 1;
    }
    jpeg_create_decompress(&info);
    jpeg_mem_src(&info, data, size);
    jpeg_read_header(&info, TRUE);
    if (info.num_components != components) {
        snprintf(reason, reason_len, "%d components, the header said %d", info.num_components, components);
        jpeg_destroy_decompress(&info);
        return 1;
    }
    jvirt_barray_ptr *arrays = jpeg_read_coefficients(&info);
    for (int ci = 0; ci < components; ci++) {
        jpeg_component_info *comp = &info.comp_info[ci];
        if ((int)comp->height_in_blocks != rows[ci] || (int)comp->width_in_blocks != cols[ci]
            || comp->quant_table == NULL) {
            snprintf(reason, reason_len, "component %d has %ux%u blocks, expected %dx%d", ci,
                     comp->height_in_blocks, comp->width_in_blocks, rows[ci], cols[ci]);
            jpeg_destroy_decompress(&info);
            return 1;
        }
        int q[DCTSIZE2];
        for (int k = 0; k < DCTSIZE2; k++) q[k] = comp->quant_table->quantval[k];
        const long plane = (long)rows[ci] * cols[ci];
        const int n = cols[ci];
        for (int r = 0; r < rows[ci]; r++) {
            JBLOCKARRAY row = (*info.mem->access_virt_barray)((j_common_ptr)&info, arrays[ci], r, 1, FALSE);
            JBLOCKROW blocks = row[0];
            /* one coefficient at a time across the block row: every write is sequential */
            for (int k = 0; k < DCTSIZE2; k++) {
                float *at = planes[ci] + k * plane + (long)r * n;
                const int qk = q[k];
                if (log_scale) {
                    for (int c = 0; c < n; c++) at[c] = scaled(blocks[c][k] * qk);
                } else {
                    for (int c = 0; c < n; c++) at[c] = (float)(blocks[c][k] * qk);
                }
            }
        }
    }
    jpeg_finish_decompress(&info);
    int warned = err.warned;
    if (warned) snprintf(reason, reason_len, "%s", err.message);
    jpeg_destroy_decompress(&info);
    return warned;
}
