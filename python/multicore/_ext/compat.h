/*
 * compat.h — the C API the extension uses, on every CPython it supports.
 *
 * Owns the shims for APIs that are newer than the oldest CPython in
 * pyproject.toml's requires-python (3.9): each one is defined here only for
 * the versions that lack it, with the same name and meaning as the real
 * one, so the other files call the modern API and need no #if. Included by
 * ext.h right after Python.h; nothing else should include it.
 *
 * Adding a shim: guard it by PY_VERSION_HEX of the release that added the
 * API (the "New in version" of the C API docs), keep the real signature,
 * and check that the build with -Werror passes on the oldest interpreter
 * (tests/stages/pyversions.sh builds on each CPython on the machine). An
 * API missing on an old version shows up there as an implicit declaration,
 * which CMakeLists.txt makes an error on every build.
 *
 * Written for multicore after the idea of pythoncapi-compat (one header of
 * shims); no code of it is copied.
 */
#ifndef MULTICORE_EXT_COMPAT_H
#define MULTICORE_EXT_COMPAT_H

#ifndef PY_VERSION_HEX
#error "compat.h needs Python.h first"
#endif

#define MCX_PY_MIN_HEX 0x03090000   /* requires-python >= 3.9 */
#if PY_VERSION_HEX < MCX_PY_MIN_HEX
#error "multicore needs CPython 3.9 or newer"
#endif

/* 3.10: Py_NewRef / Py_XNewRef return a new (strong) reference to obj. */
#if PY_VERSION_HEX < 0x030A0000 && !defined(Py_NewRef)
static inline PyObject *mcx_compat_new_ref(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}
static inline PyObject *mcx_compat_xnew_ref(PyObject *obj)
{
    Py_XINCREF(obj);
    return obj;
}
/* As in CPython, the macros cast so any object pointer may be passed. */
#define Py_NewRef(obj) mcx_compat_new_ref((PyObject *)(obj))
#define Py_XNewRef(obj) mcx_compat_xnew_ref((PyObject *)(obj))
#endif

/* 3.11: PyBuffer_ToContiguous declares its source const Py_buffer * (it
 * moved to pybuffer.h). 3.9 and 3.10 declare it non-const but only read
 * it; the view we pass comes const from PyPickleBuffer_GetBuffer(). */
#if PY_VERSION_HEX < 0x030B0000
static inline int mcx_compat_buffer_to_contiguous(void *buf, const Py_buffer *src,
                                                  Py_ssize_t len, char order)
{
    return (PyBuffer_ToContiguous)(buf, (Py_buffer *)src, len, order);
}
#define PyBuffer_ToContiguous mcx_compat_buffer_to_contiguous
#endif

#endif /* MULTICORE_EXT_COMPAT_H */
