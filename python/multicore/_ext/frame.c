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
