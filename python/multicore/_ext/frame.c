/*
 * frame.c — writing and validating the bytes the extension puts in shared
 * memory: the task payload header and the out-of-band frame (layouts in
 * frame.h).
 *
 * Owns the only code that reads those layouts from shared memory, so that
 * one fuzz target (tests/fuzz/fuzz_frame.c) covers every such read: no
 * Python, no engine state, only the bytes and their size. The Python side
 * (task.c and worker.c for the payload, oob.c for frames) calls these
 * before it looks at anything another process wrote.
 */
#include "frame.h"

#include "multicore.h"   /* MC_SHARE_MAX */

#include <string.h>

static uint64_t load_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void store_u64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, sizeof v);
}

/* ---------------------------------------------------------------------
 * Task payload header
 * --------------------------------------------------------------------- */

size_t mcx_wire_args_offset(size_t fn_len)
{
    return (MCX_WIRE_HEADER_SIZE + fn_len + (MCX_FRAME_ALIGN - 1)) & ~(size_t)(MCX_FRAME_ALIGN - 1);
}

void mcx_wire_write(void *dst, int format, int use_dill, const void *fn, size_t fn_len,
                    size_t args_off)
{
    unsigned char *p = dst;
    uint32_t off32 = (uint32_t)args_off;
    p[0] = MCX_WIRE_MAGIC;
    p[1] = MCX_WIRE_VERSION;
    p[2] = (unsigned char)format;
    p[3] = use_dill ? MCX_WIRE_DILL : 0;
    memcpy(p + 4, &off32, sizeof off32);
    store_u64(p + 8, (uint64_t)fn_len);
    if (fn_len > 0)
        memcpy(p + MCX_WIRE_HEADER_SIZE, fn, fn_len);
}

int mcx_wire_parse(const void *data, size_t len, mcx_wire_task *out)
{
    const unsigned char *p = data;
    if (data == NULL || len < MCX_WIRE_HEADER_SIZE)
        return -1;
    if (p[0] != MCX_WIRE_MAGIC || p[1] != MCX_WIRE_VERSION)
        return -1;
    if (p[2] > MCX_FMT_STRING || (p[3] & ~MCX_WIRE_DILL) != 0)
        return -1;
    uint32_t args_off;
    memcpy(&args_off, p + 4, sizeof args_off);
    uint64_t fn_len = load_u64(p + 8);
    if (fn_len > len - MCX_WIRE_HEADER_SIZE)
        return -1;
    if (args_off < MCX_WIRE_HEADER_SIZE + fn_len || args_off > len ||
        (args_off & (MCX_FRAME_ALIGN - 1)) != 0)
        return -1;
    out->format = p[2];
    out->use_dill = (p[3] & MCX_WIRE_DILL) != 0;
    out->fn = (const char *)p + MCX_WIRE_HEADER_SIZE;
    out->fn_len = (size_t)fn_len;
    out->args = (const char *)p + args_off;
    out->args_len = len - args_off;
    return 0;
}

/* ---------------------------------------------------------------------
 * Out-of-band frame: writing
 * --------------------------------------------------------------------- */

size_t mcx_frame_head_size(size_t nbuf)
{
    return 16 + nbuf * 16;
}

size_t mcx_frame_align(size_t at)
{
    return (at + (MCX_FRAME_ALIGN - 1)) & ~(size_t)(MCX_FRAME_ALIGN - 1);
}

void mcx_frame_write_head(void *frame, uint64_t pickle_len, uint64_t nbuf)
{
    unsigned char *p = frame;
    store_u64(p, pickle_len);
    store_u64(p + 8, nbuf);
}

void mcx_frame_set_buffer(void *frame, size_t i, uint64_t off, uint64_t len)
{
    unsigned char *p = (unsigned char *)frame + 16 + i * 16;
    store_u64(p, off);
    store_u64(p + 8, len);
}

uint64_t mcx_frame_link_entry(unsigned link, uint64_t offset)
{
    return MCX_FRAME_LINK | ((uint64_t)link << MCX_FRAME_LINK_SHIFT) | offset;
}

/* ---------------------------------------------------------------------
 * Out-of-band frame: reading
 * --------------------------------------------------------------------- */

int mcx_frame_parse(const void *data, size_t len, mcx_frame *out)
{
    const unsigned char *p = data;
    if (data == NULL || len < 16)
        return -1;
    uint64_t pickle_len = load_u64(p);
    uint64_t nbuf = load_u64(p + 8);
    if (nbuf > (len - 16) / 16)
        return -1;
    size_t table_end = mcx_frame_head_size((size_t)nbuf);
    if (pickle_len > len - table_end)
        return -1;
    for (uint64_t i = 0; i < nbuf; i++) {
        uint64_t off = load_u64(p + 16 + i * 16);
        uint64_t n = load_u64(p + 24 + i * 16);
        if (off & MCX_FRAME_LINK)
            continue;   /* checked against the linked buffer when resolved */
        if (off < table_end + pickle_len || off > len || n > len - off)
            return -1;
    }
    out->pickle = (const char *)p + table_end;
    out->pickle_len = (size_t)pickle_len;
    out->nbuf = (size_t)nbuf;
    out->table = p + 16;
    return 0;
}

void mcx_frame_buffer(const mcx_frame *f, size_t i, uint64_t *off, size_t *len)
{
    *off = load_u64(f->table + i * 16);
    *len = (size_t)load_u64(f->table + i * 16 + 8);
}

int mcx_frame_has_inline(const mcx_frame *f)
{
    for (size_t i = 0; i < f->nbuf; i++) {
        uint64_t off;
        size_t n;
        mcx_frame_buffer(f, i, &off, &n);
        if (!(off & MCX_FRAME_LINK))
            return 1;
    }
    return 0;
}

int mcx_frame_link_parse(uint64_t entry, unsigned *link, size_t *offset)
{
    uint64_t number = (entry & ~MCX_FRAME_LINK) >> MCX_FRAME_LINK_SHIFT;
    if (number >= MC_SHARE_MAX)
        return -1;
    *link = (unsigned)number;
    *offset = (size_t)(entry & MCX_FRAME_OFF_MASK);
    return 0;
}

/* ---------------------------------------------------------------------
 * Compact frame
 * --------------------------------------------------------------------- */

void mcx_compact_begin(mcx_compact_writer *w, void *buf, unsigned kind)
{
    w->p = buf;
    store_u64(w->p, MCX_COMPACT_MARK);
    w->p[8] = (unsigned char)kind;
    w->p[9] = 0;
    w->at = MCX_COMPACT_HEAD;
    w->n = 0;
}

/* One home for each atom type's encoding: what follows its type byte is
   ATOM_FIXED bytes (INT: i64, FLOAT: f64), nothing (NONE, FALSE, TRUE),
   or ATOM_VARLEN (STR, BYTES: a u32 length, then that many bytes); -1 for
   a byte that is no atom type. */
#define ATOM_FIXED 8
#define ATOM_VARLEN (-2)
static int atom_body(unsigned type)
{
    switch (type) {
    case MCX_ATOM_NONE:
    case MCX_ATOM_FALSE:
    case MCX_ATOM_TRUE:
        return 0;
    case MCX_ATOM_INT:
    case MCX_ATOM_FLOAT:
        return ATOM_FIXED;
    case MCX_ATOM_STR:
    case MCX_ATOM_BYTES:
        return ATOM_VARLEN;
    default:
        return -1;
    }
}

int mcx_compact_put(mcx_compact_writer *w, const mcx_atom *a)
{
    if (w->n >= MCX_COMPACT_MAX_ITEMS)
        return -1;
    int body = atom_body(a->type);
    if (body == -1 || (body == ATOM_VARLEN && a->len > MCX_COMPACT_MAX))
        return -1;
    size_t need = 1 + (body == ATOM_VARLEN ? 4 + a->len : (size_t)body);
    if (need > MCX_COMPACT_MAX - w->at)
        return -1;
    unsigned char *p = w->p + w->at;
    *p++ = (unsigned char)a->type;
    if (body == ATOM_FIXED) {
        memcpy(p, a->type == MCX_ATOM_INT ? (const void *)&a->i : (const void *)&a->f, ATOM_FIXED);
    } else if (body == ATOM_VARLEN) {
        uint32_t n = (uint32_t)a->len;
        memcpy(p, &n, 4);
        if (a->len > 0)
            memcpy(p + 4, a->data, a->len);
    }
    w->at += need;
    w->n++;
    return 0;
}

size_t mcx_compact_end(mcx_compact_writer *w)
{
    w->p[9] = (unsigned char)w->n;
    return w->at;
}

int mcx_compact_is(const void *data, size_t len)
{
    return data != NULL && len >= 8 && load_u64(data) == MCX_COMPACT_MARK;
}

int mcx_compact_parse(const void *data, size_t len, mcx_compact *out)
{
    const unsigned char *p = data;
    if (!mcx_compact_is(data, len) || len < MCX_COMPACT_HEAD || len > MCX_COMPACT_MAX)
        return -1;
    unsigned kind = p[8], n = p[9];
    if ((kind != MCX_COMPACT_VALUE && kind != MCX_COMPACT_CALL) || n > MCX_COMPACT_MAX_ITEMS ||
        (kind == MCX_COMPACT_VALUE && n != 1))
        return -1;
    size_t at = MCX_COMPACT_HEAD;
    for (unsigned k = 0; k < n; k++) {
        mcx_atom *a = &out->item[k];
        if (at >= len)
            return -1;
        a->type = p[at++];
        a->i = 0;
        a->f = 0.0;
        a->data = NULL;
        a->len = 0;
        int body = atom_body(a->type);
        if (body == -1)
            return -1;
        if (body == ATOM_FIXED) {
            if (len - at < ATOM_FIXED)
                return -1;
            memcpy(a->type == MCX_ATOM_INT ? (void *)&a->i : (void *)&a->f, p + at, ATOM_FIXED);
            at += ATOM_FIXED;
        } else if (body == ATOM_VARLEN) {
            uint32_t m;
            if (len - at < 4)
                return -1;
            memcpy(&m, p + at, 4);
            at += 4;
            if (m > len - at)
                return -1;
            a->data = (const char *)p + at;
            a->len = m;
            at += m;
        }
    }
    if (at != len)
        return -1;
    out->kind = kind;
    out->n = n;
    return 0;
}
