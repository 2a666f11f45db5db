/* Decode one window of a JPEG with libjpeg-turbo, skipping the rest (the CPU half of what DALI's
 * ROI decoders do): rows above the window are skipped (entropy-decoded only, no IDCT, upsampling
 * or colour conversion), columns outside it are not reconstructed (jpeg_crop_scanline), and
 * decoding stops after the window's last row.
 *
 *   decode_window(data, top, left, height, width) -> (pixels, x0, row_width)
 *
 * pixels: a bytearray holding height rows of row_width RGB pixels (its tail unused), starting at
 * image column x0 <= left (libjpeg-turbo widens the window to its iMCU grid). Warnings (corrupt
 * data, a truncated stream) are errors: ValueError. NotImplementedError for a colour space that
 * libjpeg-turbo does not convert to RGB (CMYK, YCCK): the caller decodes those another way.
 *
 * Why compiled: no Python package exposes libjpeg-turbo's partial decoding on the CPU (simplejpeg,
 * Pillow and OpenCV decode whole images; DALI's CPU decoder does it, inside a DALI pipeline only).
 * Build: optional (pyproject ext-modules); without it the `fast` backend decodes whole images.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} error_mgr;

static void on_error(j_common_ptr cinfo) {
    error_mgr *err = (error_mgr *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) on_error(cinfo); /* a warning: corrupt or truncated data */
}

static PyObject *decode_window(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    int top, left, height, width;
    if (!PyArg_ParseTuple(args, "y*iiii", &data, &top, &left, &height, &width)) return NULL;

    struct jpeg_decompress_struct cinfo;
    error_mgr err;
    /* volatile: read after a longjmp */
    PyObject *volatile out = NULL;
    volatile int status = 0; /* 0 ok, 1 libjpeg error, 2 bad window, 3 colour space */
    volatile JDIMENSION x0 = 0, row_width = 0;
    PyThreadState *volatile state = NULL;
    unsigned char *pixels;

    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    err.message[0] = '\0';
    state = PyEval_SaveThread();
    if (setjmp(err.jump)) {
        status = 1;
        goto done;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data.buf, (unsigned long)data.len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        status = 3;
        goto done;
    }
    if (top < 0 || left < 0 || height <= 0 || width <= 0 || (JDIMENSION)(top + height) > cinfo.image_height ||
        (JDIMENSION)(left + width) > cinfo.image_width) {
        status = 2;
        goto done;
    }
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    JDIMENSION x = (JDIMENSION)left, w = (JDIMENSION)width;
    jpeg_crop_scanline(&cinfo, &x, &w);
    x0 = x;
    row_width = w;

    PyEval_RestoreThread(state);
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)height * row_width * 3);
    state = PyEval_SaveThread();
    if (out == NULL) goto done;
    pixels = (unsigned char *)PyByteArray_AS_STRING(out);

    if (top > 0 && jpeg_skip_scanlines(&cinfo, (JDIMENSION)top) != (JDIMENSION)top) {
        status = 1;
        strcpy(err.message, "fewer rows than the header says");
        goto done;
    }
    for (int row = 0; row < height;) {
        JSAMPROW line = pixels + (size_t)row * row_width * 3;
        JDIMENSION got = jpeg_read_scanlines(&cinfo, &line, 1);
        if (got == 0) {
            status = 1;
            strcpy(err.message, "fewer rows than the header says");
            goto done;
        }
        row += (int)got;
    }

done:
    jpeg_destroy_decompress(&cinfo); /* also aborts a decompression stopped before its last row */
    PyEval_RestoreThread(state);
    PyBuffer_Release(&data);
    if (out == NULL && status == 0) return NULL; /* MemoryError set */
    if (status != 0) {
        Py_XDECREF(out);
        if (status == 1) PyErr_Format(PyExc_ValueError, "JPEG: %s", err.message);
        else if (status == 2)
            PyErr_Format(PyExc_ValueError, "window (%d, %d, %d, %d) outside the image", top, left, height, width);
        else PyErr_SetString(PyExc_NotImplementedError, "CMYK/YCCK JPEG: not decoded to RGB here");
        return NULL;
    }
    return Py_BuildValue("(Nii)", out, (int)x0, (int)row_width);
}

static PyMethodDef methods[] = {
    {"decode_window", decode_window, METH_VARARGS,
     "decode_window(data, top, left, height, width) -> (pixels, x0, row_width): RGB rows of one JPEG window"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_window", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpeg_window(void) { return PyModule_Create(&module); }
