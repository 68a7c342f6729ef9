/*
 * npalloc.c — a worker's large numpy arrays live in the pool's shared memory.
 *
 * Owns: the numpy data-memory handler (NEP 49, numpy >= 1.22) a worker
 * installs, the table of the arrays it placed, and the test that lets the
 * result path move such an array to the caller instead of copying it.
 *
 * Why: a task that builds a large array and returns it used to pay one
 * copy of every byte into the result frame (an 8 MiB np.ones return spent
 * most of its time in that memcpy). With this handler, an array from
 * MCX_NP_SHARED_MIN bytes up is a shared buffer of the worker's pool from
 * the start (mc_buffer_alloc), so the result can link it (mc_result_share)
 * and the caller gets a view of the very same memory, as for
 * multicore.shared arrays. Smaller arrays, and any allocation the pool
 * cannot serve (region full, the worker's hold limit, outside a task, a
 * fork() child of the worker), go to numpy's default handler, as do
 * arrays beyond the worker's budget: a quarter of the region shared by the
 * workers (mcx_np_budget()), so that arrays a worker keeps never take the
 * room the caller's tasks need.
 *
 * A link shares memory; a move must not. So an array is moved only when
 * nothing in the worker can reach it once the task's result object is
 * dropped: mcx_np_movable() walks the buffer's exporter and its chain of
 * .base arrays and requires each to be referenced only by the next one
 * down (the first by the PickleBuffer the pickler made of it), ending at an
 * array that owns one of this table's blocks. A cached, global or still
 * viewed array fails the test and is copied as before, so a later change
 * in the worker never shows in a result the caller already holds.
 *
 * The handler is reached without numpy's headers (the extension does not
 * depend on numpy): through the C-API table numpy exports as the capsule
 * _ARRAY_API, at the slots that have been stable since numpy 1.22, and
 * only when the worker's interpreter has already imported numpy (this file
 * never imports it). The table is lock-free (slots claimed with a
 * compare-and-swap) because numpy documents that its handlers may run
 * without the GIL, and so that a fork() child of a worker never waits on a
 * lock. A fork() child gets private copies of the placed arrays (an
 * at-fork handler, privatize_in_child()), places none of its own, and
 * hands the blocks back to nobody: they stay the worker's.
 *
 * numpy is found after a fork of the zygote (the caller had imported it),
 * after the user's worker_init, or after the first task whose result had
 * out-of-band buffers: never with a cost on a task that has none.
 */
#include "ext.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

/* numpy's C-API table (numpy/__multiarray_api.h), the slots used here. */
#define NP_SLOT_ARRAY_TYPE 2
#define NP_SLOT_FEATURE_VERSION 211
#define NP_SLOT_SET_HANDLER 304
#define NP_FEATURE_1_22 0x0000000fu   /* NPY_1_22_API_VERSION: handlers exist */

/* numpy/ndarraytypes.h, PyDataMem_Handler version 1 (a stable layout). */
typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} np_allocator;

typedef struct {
    char name[127];
    uint8_t version;
    np_allocator allocator;
} np_handler;

/* One array placed in shared memory. data is the slot's state: NULL free,
   CLAIMED while being filled or emptied, else the array's bytes (set last,
   so a reader that sees it sees len and hold too). */
typedef struct {
    _Atomic(char *) data;
    size_t len;
    mc_hold *hold;
} np_block;

#define CLAIMED ((char *)1)

static np_block g_blocks[MCX_NP_BLOCKS];
static atomic_int g_live;                /* slots not free: a fast "none" */
static atomic_size_t g_bytes;            /* bytes in those slots */
static size_t g_budget;                  /* at most this many (mcx_np_worker_start) */
static const np_handler *g_default;      /* the one before ours, for everything else */
static PyObject *g_default_capsule;      /* keeps it alive */
static PyTypeObject *g_ndarray;
static PyObject *g_capsule;              /* ours; kept for the process's life */
static pid_t g_owner;                    /* the worker that installed it */
static int g_state;                      /* 0 not tried, 1 installed, -1 unavailable */

/* The slot holding ptr (exact start), or NULL. */
static np_block *find_exact(const void *ptr)
{
    if (atomic_load_explicit(&g_live, memory_order_acquire) == 0)
        return NULL;
    for (int i = 0; i < MCX_NP_BLOCKS; i++) {
        if (atomic_load_explicit(&g_blocks[i].data, memory_order_acquire) == ptr)
            return &g_blocks[i];
    }
    return NULL;
}

/* A shared buffer for size bytes, recorded in a slot; NULL when the pool
   cannot give one (the caller then uses numpy's default). */
static void *shared_alloc(size_t size)
{
    if (size < MCX_NP_SHARED_MIN || mcx_getpid() != g_owner)
        return NULL;
    np_block *slot = NULL;
    for (int i = 0; i < MCX_NP_BLOCKS && slot == NULL; i++) {
        char *expected = NULL;
        if (atomic_compare_exchange_strong(&g_blocks[i].data, &expected, CLAIMED))
            slot = &g_blocks[i];
    }
    if (slot == NULL)
        return NULL;   /* every slot in use */
    atomic_fetch_add_explicit(&g_live, 1, memory_order_relaxed);
    if (atomic_fetch_add(&g_bytes, size) + size > g_budget) {
        atomic_fetch_sub(&g_bytes, size);
        atomic_store_explicit(&slot->data, NULL, memory_order_release);
        atomic_fetch_sub_explicit(&g_live, 1, memory_order_relaxed);
        return NULL;   /* the worker's share of the region is used */
    }
    mc_hold *hold = NULL;
    char *data = NULL;
    if (mc_buffer_alloc(NULL, size, &hold) == MC_OK)
        data = mc_hold_data(hold, NULL);
    if (data == NULL) {
        mc_hold_release(hold);
        atomic_fetch_sub(&g_bytes, size);
        atomic_store_explicit(&slot->data, NULL, memory_order_release);
        atomic_fetch_sub_explicit(&g_live, 1, memory_order_relaxed);
        return NULL;
    }
    slot->len = size;
    slot->hold = hold;
    atomic_store_explicit(&slot->data, data, memory_order_release);
    return data;
}

/* Give a slot's block back (its last user in this process is gone). */
static void shared_free(np_block *slot)
{
    char *data = atomic_load(&slot->data);
    if (data == NULL || data == CLAIMED || !atomic_compare_exchange_strong(&slot->data, &data, CLAIMED))
        return;   /* freed twice: numpy never does; leave it */
    mc_hold *hold = slot->hold;
    atomic_fetch_sub(&g_bytes, slot->len);
    slot->hold = NULL;
    slot->len = 0;
    atomic_store_explicit(&slot->data, NULL, memory_order_release);
    atomic_fetch_sub_explicit(&g_live, 1, memory_order_relaxed);
    /* In a fork() child this frees only the child's copy of the handle
       (the engine checks the pid): the block stays the worker's. */
    mc_hold_release(hold);
}

static void *np_malloc(void *ctx, size_t size)
{
    (void)ctx;
    void *p = shared_alloc(size);
    return p ? p : g_default->allocator.malloc(g_default->allocator.ctx, size);
}

static void *np_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    size_t size;
    if (!__builtin_mul_overflow(nelem, elsize, &size)) {
        void *p = shared_alloc(size);
        if (p != NULL) {
            /* a reused block holds what its last user wrote */
            memset(p, 0, size);
            return p;
        }
    }
    return g_default->allocator.calloc(g_default->allocator.ctx, nelem, elsize);
}

static void np_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    np_block *slot = ptr ? find_exact(ptr) : NULL;
    if (slot != NULL)
        shared_free(slot);
    else
        g_default->allocator.free(g_default->allocator.ctx, ptr, size);
}

static void *np_realloc(void *ctx, void *ptr, size_t new_size)
{
    np_block *slot = ptr ? find_exact(ptr) : NULL;
    if (slot == NULL) {
        /* numpy's own block: it grows where it is, and stays private */
        return g_default->allocator.realloc(g_default->allocator.ctx, ptr, new_size);
    }
    void *p = np_malloc(ctx, new_size ? new_size : 1);
    if (p == NULL)
        return NULL;   /* the old block is untouched, as realloc() promises */
    memcpy(p, ptr, slot->len < new_size ? slot->len : new_size);
    shared_free(slot);
    return p;
}

static np_handler g_handler = {
    "multicore_shared_memory", 1,
    {NULL, np_malloc, np_calloc, np_realloc, np_free},
};

/* pthread_atfork child handler: a process a task forks gets its own copy
   of every array placed here, as fork() gives of private memory, so that
   its writes never reach the worker (or a block the worker frees and
   reuses, or one moved to the caller). Each array's pages are copied into
   a private anonymous mapping that mremap() then moves over them. The
   first and last page may hold bytes of neighbouring blocks: the child
   gets a private copy of those too, which is what it sees of them anyway.
   Only system calls and memcpy: safe in the child of a threaded process.
   A page that cannot be copied is left shared (out of memory). */
static void privatize_in_child(void)
{
    if (atomic_load_explicit(&g_live, memory_order_acquire) == 0)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < MCX_NP_BLOCKS; i++) {
        char *d = atomic_load_explicit(&g_blocks[i].data, memory_order_acquire);
        if (d == NULL || d == CLAIMED)
            continue;
        uintptr_t lo = (uintptr_t)d & ~(page - 1);
        uintptr_t hi = ((uintptr_t)d + g_blocks[i].len + page - 1) & ~(page - 1);
        size_t n = hi - lo;
        void *copy = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (copy == MAP_FAILED)
            continue;
        memcpy(copy, (void *)lo, n);
        if (mremap(copy, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)lo) == MAP_FAILED)
            munmap(copy, n);
    }
}

/* numpy's C-API table, if this interpreter has imported numpy; else NULL
   with no exception. */
static void **numpy_api(void)
{
    static const char *const modules[] = {"numpy._core._multiarray_umath",
                                          "numpy.core._multiarray_umath"};
    for (size_t i = 0; i < sizeof modules / sizeof modules[0]; i++) {
        PyObject *name = PyUnicode_FromString(modules[i]);
        PyObject *mod = name ? PyImport_GetModule(name) : NULL;
        Py_XDECREF(name);
        if (mod == NULL) {
            PyErr_Clear();
            continue;
        }
        PyObject *capsule = PyObject_GetAttrString(mod, "_ARRAY_API");
        Py_DECREF(mod);
        void **api = capsule && PyCapsule_CheckExact(capsule)
                         ? PyCapsule_GetPointer(capsule, NULL) : NULL;
        Py_XDECREF(capsule);   /* the module keeps the table alive */
        PyErr_Clear();
        if (api != NULL)
            return api;
    }
    return NULL;
}

void mcx_np_worker_start(int workers)
{
    if (workers <= 0)
        workers = mc_online_cpus();
    g_budget = (size_t)(mc_worker_shm_size() / 4 / (uint64_t)(workers > 0 ? workers : 1));
    mcx_np_install();
}

int mcx_np_install(void)
{
    assert(PyGILState_Check());
    if (g_state != 0)
        return g_state > 0;
    void **api = numpy_api();
    if (api == NULL)
        return 0;   /* numpy not imported (yet): try again later */
    g_state = -1;
    unsigned (*feature)(void) = (unsigned (*)(void))api[NP_SLOT_FEATURE_VERSION];
    if (feature() < NP_FEATURE_1_22)
        return 0;   /* no handlers before numpy 1.22 */
    g_ndarray = (PyTypeObject *)api[NP_SLOT_ARRAY_TYPE];
    g_capsule = PyCapsule_New(&g_handler, "mem_handler", NULL);
    if (g_capsule == NULL) {
        PyErr_Clear();
        return 0;
    }
    /* Whatever handler this thread had (numpy's default unless the
       caller's code set one) serves everything ours does not. */
    PyObject *(*set_handler)(PyObject *) = (PyObject * (*)(PyObject *)) api[NP_SLOT_SET_HANDLER];
    PyObject *old = set_handler(g_capsule);
    g_default = old ? PyCapsule_GetPointer(old, "mem_handler") : NULL;
    if (g_default == NULL || g_default->version != 1) {
        PyErr_Clear();
        if (old != NULL)
            Py_XDECREF(set_handler(old));   /* put it back */
        Py_XDECREF(old);
        PyErr_Clear();
        Py_CLEAR(g_capsule);
        return 0;
    }
    g_default_capsule = old;
    g_owner = mcx_getpid();
    if (pthread_atfork(NULL, NULL, privatize_in_child) != 0) {
        /* without it a fork() child would share the arrays: do not place any */
        g_owner = 0;
    }
    g_state = 1;
    return 1;
}

int mcx_np_pending(void)
{
    return g_state == 0;
}

/* 1 if nothing but the expected references reach obj, an ndarray (not a
   subclass): no other strong reference, and no weak reference (a weakref
   turns back into a strong one at any time, in another thread too). */
static int only_held(PyObject *obj, Py_ssize_t expected)
{
    if (!Py_IS_TYPE(obj, g_ndarray) || Py_REFCNT(obj) != expected)
        return 0;
    Py_ssize_t off = g_ndarray->tp_weaklistoffset;
    return off > 0 && *(PyObject **)((char *)obj + off) == NULL;
}

/* An ndarray's data pointer: PyArrayObject's first field after the object
   head, a layout numpy has kept since its first release (ndarraytypes.h,
   PyArrayObject_fields). */
static const char *array_data(PyObject *array)
{
    return *(char *const *)((const char *)array + sizeof(PyObject));
}

mc_hold *mcx_np_movable(const Py_buffer *view, size_t *offset)
{
    if (g_state != 1 || mcx_getpid() != g_owner || atomic_load(&g_live) == 0)
        return NULL;
    if (!PyBuffer_IsContiguous(view, 'C') || view->obj == NULL)
        return NULL;
    /* The block the bytes lie in. */
    const char *buf = view->buf;
    np_block *slot = NULL;
    for (int i = 0; i < MCX_NP_BLOCKS && slot == NULL; i++) {
        const char *d = atomic_load_explicit(&g_blocks[i].data, memory_order_acquire);
        if (d != NULL && d != CLAIMED && buf >= d && buf + view->len <= d + g_blocks[i].len)
            slot = &g_blocks[i];
    }
    if (slot == NULL)
        return NULL;
    /* The exporter (referenced by the PickleBuffer's view alone), then each
       .base down to the array that owns the block (each referenced by the
       array above it alone, plus the reference GetAttr gave us). */
    PyObject *obj = Py_NewRef(view->obj);
    Py_ssize_t expected = 2;   /* the view's, and ours */
    mc_hold *found = NULL;
    for (int depth = 0; depth < 32; depth++) {
        if (!only_held(obj, expected))
            break;
        PyObject *base = PyObject_GetAttrString(obj, "base");
        if (base == NULL) {
            PyErr_Clear();
            break;
        }
        if (base == Py_None) {
            Py_DECREF(base);
            /* the owner of the block, which nobody else can reach */
            if (array_data(obj) == atomic_load(&slot->data))
                found = slot->hold;
            break;
        }
        Py_SETREF(obj, base);
        expected = 2;   /* the array above's .base, and ours */
    }
    Py_DECREF(obj);
    if (found != NULL)
        *offset = (size_t)(buf - atomic_load(&slot->data));
    return found;
}

