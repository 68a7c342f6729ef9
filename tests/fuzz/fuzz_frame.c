/*
 * fuzz_frame.c — the parsers of the bytes the Python extension puts in
 * shared memory (python/multicore/_ext/frame.c): the task payload a worker
 * reads before it unpickles anything (mcx_wire_parse), and the out-of-band
 * frame the caller reads in a result and a worker in its arguments
 * (mcx_frame_parse, mcx_frame_buffer, mcx_frame_link_parse), and the
 * compact frame of small atoms that replaces it for trivial calls and
 * results (mcx_compact_is, mcx_compact_parse; built with mcx_compact_put).
 * A task can
 * write anything into its own result, and past it, so these are the only
 * reads of another process's bytes that the extension does before Python
 * sees them.
 *
 * Input: a first byte choosing what is built, then
 *   - raw (bit 0 set): the rest of the input is the bytes found in shared
 *     memory, parsed as a payload and as a frame;
 *   - built: a description (a payload or a bare frame; format and dill
 *     flag; callable part, pickle stream and buffers — in the frame, or
 *     ranges of a link — with their sizes) written with frame.c's own
 *     writers, the way task.c, worker.c and oob.c write them; then edits:
 *     stores of a byte or of a u64 at chosen offsets, as a writer that
 *     overran its buffer or was killed half-way would leave.
 *
 * The bytes are copied into a heap block of exactly their size, so ASan
 * reports any read past them. Must hold:
 *   - whatever the bytes, a parser either refuses them or describes parts
 *     that lie inside them: the callable part and the args frame disjoint
 *     and in order, the args frame 64-byte aligned; the pickle stream after
 *     the buffer table, each buffer in the frame after the pickle stream
 *     and inside the frame (every byte of each is read, for ASan); a link
 *     entry either refused or naming a link below MC_SHARE_MAX;
 *   - what a parser accepts survives being written again with the writers
 *     (the canonical layout) and parsed back, to the same parts and bytes;
 *   - with no edit, what was built parses back to exactly the description;
 *   - compact frames (first byte with bits 0 and 3 = 0 and 1: built from a
 *     list of atoms, then edited; and every raw input): a parse either
 *     refuses or gives a kind and count in range and items whose bytes lie
 *     inside the frame, ending exactly at its end; what it accepts is
 *     written again by the writer to the very same bytes; unedited, the
 *     atoms come back exactly (ints, float bits, lengths and bytes).
 */
#include "fuzz_common.h"

#include "frame.h"

#define FZ_MAX_BUFS 8

typedef struct {
    int link;            /* a range of a linked shared buffer, not in the frame */
    unsigned link_no;
    uint64_t link_off;
    size_t len;
} fz_buf;

typedef struct {
    size_t pickle_len;
    size_t nbuf;
    fz_buf buf[FZ_MAX_BUFS];
} fz_frame_desc;

static volatile unsigned fz_sink;

/* Read every byte of [p, p + n): ASan checks each. */
static void touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += b[i];
    fz_sink += sum;
}

/* The byte at position i of the content the builder writes. */
static unsigned char pattern(size_t i, unsigned seed)
{
    return (unsigned char)(i * 31u + seed * 7u + 1u);
}

/* The frame a description gives, at dst (size from frame_size()). */
static size_t frame_size(const fz_frame_desc *d)
{
    size_t at = mcx_frame_head_size(d->nbuf) + d->pickle_len;
    for (size_t i = 0; i < d->nbuf; i++)
        if (!d->buf[i].link)
            at = mcx_frame_align(at) + d->buf[i].len;
    return at;
}

static void frame_write(const fz_frame_desc *d, unsigned char *dst)
{
    mcx_frame_write_head(dst, d->pickle_len, d->nbuf);
    size_t at = mcx_frame_head_size(d->nbuf);
    for (size_t k = 0; k < d->pickle_len; k++)
        dst[at + k] = pattern(k, 1);
    at += d->pickle_len;
    for (size_t i = 0; i < d->nbuf; i++) {
        const fz_buf *b = &d->buf[i];
        if (b->link) {
            mcx_frame_set_buffer(dst, i, mcx_frame_link_entry(b->link_no, b->link_off), b->len);
            continue;
        }
        at = mcx_frame_align(at);
        mcx_frame_set_buffer(dst, i, at, b->len);
        for (size_t k = 0; k < b->len; k++)
            dst[at + k] = pattern(k, 2 + (unsigned)i);
        at += b->len;
    }
}

/* Checks on a frame mcx_frame_parse() accepted from [base, base + len). */
static void check_frame(const unsigned char *base, size_t len, const mcx_frame *f)
{
    size_t table_end = mcx_frame_head_size(f->nbuf);
    FZ_ASSERT(f->nbuf <= (len - 16) / 16);
    FZ_ASSERT(f->table == base + 16);
    FZ_ASSERT((const unsigned char *)f->pickle == base + table_end);
    FZ_ASSERT(f->pickle_len <= len - table_end);
    touch(f->table, table_end - 16);
    touch(f->pickle, f->pickle_len);
    int inline_seen = 0;
    for (size_t i = 0; i < f->nbuf; i++) {
        uint64_t off;
        size_t n;
        mcx_frame_buffer(f, i, &off, &n);
        if (off & MCX_FRAME_LINK) {
            unsigned link = ~0u;
            size_t at = 0;
            if (mcx_frame_link_parse(off, &link, &at) == 0) {
                FZ_ASSERT(link < MC_SHARE_MAX);
                FZ_ASSERT(at <= MCX_FRAME_OFF_MASK);
            }
            continue;
        }
        inline_seen = 1;
        FZ_ASSERT(off >= table_end + f->pickle_len);
        FZ_ASSERT(off <= len && n <= len - off);
        touch(base + off, n);
    }
    FZ_ASSERT(mcx_frame_has_inline(f) == inline_seen);
}

/* What was accepted, written again in the canonical layout: it must parse
   back to the same pickle stream and buffers. */
static void rewrite_frame(const mcx_frame *f)
{
    size_t size = mcx_frame_head_size(f->nbuf) + f->pickle_len;
    for (size_t i = 0; i < f->nbuf; i++) {
        uint64_t off;
        size_t n;
        mcx_frame_buffer(f, i, &off, &n);
        if (!(off & MCX_FRAME_LINK))
            size = mcx_frame_align(size) + n;
    }
    unsigned char *p = malloc(size);
    FZ_ASSERT(p != NULL);
    mcx_frame_write_head(p, f->pickle_len, f->nbuf);
    size_t at = mcx_frame_head_size(f->nbuf);
    memcpy(p + at, f->pickle, f->pickle_len);
    at += f->pickle_len;
    for (size_t i = 0; i < f->nbuf; i++) {
        uint64_t off;
        size_t n;
        mcx_frame_buffer(f, i, &off, &n);
        if (off & MCX_FRAME_LINK) {
            mcx_frame_set_buffer(p, i, off, n);
            continue;
        }
        at = mcx_frame_align(at);
        mcx_frame_set_buffer(p, i, at, n);
        memcpy(p + at, (const unsigned char *)f->table - 16 + off, n);
        at += n;
    }
    FZ_ASSERT(at == size);

    mcx_frame g;
    FZ_ASSERT(mcx_frame_parse(p, size, &g) == 0);
    FZ_ASSERT(g.nbuf == f->nbuf && g.pickle_len == f->pickle_len);
    FZ_ASSERT(memcmp(g.pickle, f->pickle, f->pickle_len) == 0);
    for (size_t i = 0; i < f->nbuf; i++) {
        uint64_t off, goff;
        size_t n, gn;
        mcx_frame_buffer(f, i, &off, &n);
        mcx_frame_buffer(&g, i, &goff, &gn);
        FZ_ASSERT(gn == n);
        if (off & MCX_FRAME_LINK) {
            FZ_ASSERT(goff == off);
            continue;
        }
        FZ_ASSERT(memcmp(p + goff, (const unsigned char *)f->table - 16 + off, n) == 0);
    }
    free(p);
}

/* With no edit: the frame is exactly what the description wrote. */
static void check_exact(const mcx_frame *f, const fz_frame_desc *d)
{
    FZ_ASSERT(f->pickle_len == d->pickle_len && f->nbuf == d->nbuf);
    for (size_t k = 0; k < d->pickle_len; k++)
        FZ_ASSERT((unsigned char)f->pickle[k] == pattern(k, 1));
    for (size_t i = 0; i < d->nbuf; i++) {
        uint64_t off;
        size_t n;
        mcx_frame_buffer(f, i, &off, &n);
        FZ_ASSERT(n == d->buf[i].len);
        if (d->buf[i].link) {
            unsigned link;
            size_t at;
            FZ_ASSERT(mcx_frame_link_parse(off, &link, &at) == 0);
            FZ_ASSERT(link == d->buf[i].link_no && at == d->buf[i].link_off);
            continue;
        }
        FZ_ASSERT(!(off & MCX_FRAME_LINK) && off % MCX_FRAME_ALIGN == 0);
        const unsigned char *b = (const unsigned char *)f->table - 16 + off;
        for (size_t k = 0; k < n; k++)
            FZ_ASSERT(b[k] == pattern(k, 2 + (unsigned)i));
    }
}

/* Parse [data, data + len) as a frame; d: the description, when unedited. */
static void parse_frame(const unsigned char *data, size_t len, const fz_frame_desc *d)
{
    mcx_frame f;
    if (mcx_frame_parse(data, len, &f) != 0) {
        FZ_ASSERT(d == NULL);   /* what the writers wrote parses */
        return;
    }
    check_frame(data, len, &f);
    rewrite_frame(&f);
    if (d != NULL)
        check_exact(&f, d);
}

/* Parse [data, data + len) as a task payload, then its args as a frame, as
   worker.c does. want: the fields written, when unedited. */
static void parse_payload(const unsigned char *data, size_t len, const mcx_wire_task *want,
                          const fz_frame_desc *d)
{
    mcx_wire_task t;
    if (mcx_wire_parse(data, len, &t) != 0) {
        FZ_ASSERT(want == NULL);
        return;
    }
    FZ_ASSERT(t.format >= MCX_FMT_PICKLE && t.format <= MCX_FMT_STRING);
    FZ_ASSERT(t.use_dill == 0 || t.use_dill == 1);
    FZ_ASSERT((const unsigned char *)t.fn == data + MCX_WIRE_HEADER_SIZE);
    FZ_ASSERT(t.fn_len <= len - MCX_WIRE_HEADER_SIZE);
    size_t args_off = (size_t)((const unsigned char *)t.args - data);
    FZ_ASSERT(args_off >= MCX_WIRE_HEADER_SIZE + t.fn_len && args_off <= len);
    FZ_ASSERT(args_off % MCX_FRAME_ALIGN == 0);
    FZ_ASSERT(t.args_len == len - args_off);
    touch(t.fn, t.fn_len);

    /* Written again, it parses to the same fields. */
    unsigned char *p = malloc(len);
    FZ_ASSERT(p != NULL);
    memcpy(p, data, len);
    mcx_wire_write(p, t.format, t.use_dill, t.fn, t.fn_len, args_off);
    mcx_wire_task u;
    FZ_ASSERT(mcx_wire_parse(p, len, &u) == 0);
    FZ_ASSERT(u.format == t.format && u.use_dill == t.use_dill && u.fn_len == t.fn_len &&
              u.args_len == t.args_len && (const unsigned char *)u.args - p == (ptrdiff_t)args_off);
    FZ_ASSERT(memcmp(u.fn, t.fn, t.fn_len) == 0);
    free(p);

    if (want != NULL) {
        FZ_ASSERT(t.format == want->format && t.use_dill == want->use_dill);
        FZ_ASSERT(t.fn_len == want->fn_len && args_off == mcx_wire_args_offset(want->fn_len));
        for (size_t k = 0; k < t.fn_len; k++)
            FZ_ASSERT((unsigned char)t.fn[k] == pattern(k, 0));
    }
    parse_frame((const unsigned char *)t.args, t.args_len, want ? d : NULL);
}

/* A u64 to store: small, near a size, a link entry, or anything. */
static uint64_t edit_value(fz_in *in, size_t len)
{
    switch (fz_u8(in) % 6) {
    case 0:
        return fz_u8(in);
    case 1:
        return len + (uint64_t)(int64_t)(int8_t)fz_u8(in);
    case 2:
        return (uint64_t)fz_u16(in) * MCX_FRAME_ALIGN;
    case 3:
        return mcx_frame_link_entry(fz_u8(in) % 16, fz_u16(in));
    case 4:
        return UINT64_MAX - fz_u8(in);
    default:
        return fz_u64(in);
    }
}

/* ---------------------------------------------------------------------
 * Compact frames
 * --------------------------------------------------------------------- */

/* Checks on what mcx_compact_parse() made of [base, base + len). */
static void check_compact(const unsigned char *base, size_t len, const mcx_compact *c)
{
    FZ_ASSERT(mcx_compact_is(base, len));
    FZ_ASSERT(len >= MCX_COMPACT_HEAD && len <= MCX_COMPACT_MAX);
    FZ_ASSERT(c->kind == MCX_COMPACT_VALUE || c->kind == MCX_COMPACT_CALL);
    FZ_ASSERT(c->n <= MCX_COMPACT_MAX_ITEMS);
    FZ_ASSERT(c->kind != MCX_COMPACT_VALUE || c->n == 1);
    for (size_t k = 0; k < c->n; k++) {
        const mcx_atom *a = &c->item[k];
        FZ_ASSERT(a->type <= MCX_ATOM_BYTES);
        if (a->type == MCX_ATOM_STR || a->type == MCX_ATOM_BYTES) {
            FZ_ASSERT((const unsigned char *)a->data >= base + MCX_COMPACT_HEAD);
            FZ_ASSERT(a->len <= len && (size_t)((const unsigned char *)a->data - base) <= len - a->len);
            touch(a->data, a->len);
        }
    }
    /* written again: the very same bytes */
    unsigned char *p = malloc(MCX_COMPACT_MAX);
    FZ_ASSERT(p != NULL);
    mcx_compact_writer w;
    mcx_compact_begin(&w, p, c->kind);
    for (size_t k = 0; k < c->n; k++)
        FZ_ASSERT(mcx_compact_put(&w, &c->item[k]) == 0);
    FZ_ASSERT(mcx_compact_end(&w) == len);
    FZ_ASSERT(memcmp(p, base, len) == 0);
    free(p);
}

static void parse_compact(const unsigned char *data, size_t len, const mcx_compact *want)
{
    mcx_compact c;
    if (mcx_compact_parse(data, len, &c) != 0) {
        FZ_ASSERT(want == NULL);
        return;
    }
    check_compact(data, len, &c);
    if (want == NULL)
        return;
    FZ_ASSERT(c.kind == want->kind && c.n == want->n);
    for (size_t k = 0; k < c.n; k++) {
        const mcx_atom *a = &c.item[k], *b = &want->item[k];
        FZ_ASSERT(a->type == b->type);
        if (a->type == MCX_ATOM_INT)
            FZ_ASSERT(a->i == b->i);
        if (a->type == MCX_ATOM_FLOAT)
            FZ_ASSERT(memcmp(&a->f, &b->f, sizeof a->f) == 0);   /* NaN bits, -0.0 */
        if (a->type == MCX_ATOM_STR || a->type == MCX_ATOM_BYTES)
            FZ_ASSERT(a->len == b->len && memcmp(a->data, b->data, a->len) == 0);
    }
}

/* Built: a list of atoms (as oob.c writes a call's arguments or a result),
   then edits. Atoms that do not fit end the list, as oob.c then pickles. */
static void fuzz_compact(fz_in *in, uint8_t kind)
{
    static unsigned char text[MCX_COMPACT_MAX + 16];
    for (size_t k = 0; k < sizeof text; k++)
        text[k] = pattern(k, 5);
    mcx_compact want = {0};
    want.kind = (kind & 16) ? MCX_COMPACT_VALUE : MCX_COMPACT_CALL;
    unsigned count = want.kind == MCX_COMPACT_VALUE ? 1 : fz_u8(in) % (MCX_COMPACT_MAX_ITEMS + 3);
    unsigned char *buf = malloc(MCX_COMPACT_MAX);
    FZ_ASSERT(buf != NULL);
    mcx_compact_writer w;
    mcx_compact_begin(&w, buf, want.kind);
    for (unsigned k = 0; k < count; k++) {
        mcx_atom a = {0};
        a.type = fz_u8(in) % 8;   /* 7: not an atom type, refused */
        if (a.type == MCX_ATOM_INT) {
            a.i = (int64_t)fz_u64(in);
        } else if (a.type == MCX_ATOM_FLOAT) {
            uint64_t bits = fz_u64(in);
            memcpy(&a.f, &bits, sizeof bits);
        } else if (a.type == MCX_ATOM_STR || a.type == MCX_ATOM_BYTES) {
            a.len = fz_u16(in) % (MCX_COMPACT_MAX + 16);
            a.data = (const char *)text;
        }
        int full = w.n >= MCX_COMPACT_MAX_ITEMS;
        int ok = mcx_compact_put(&w, &a);
        if (a.type > MCX_ATOM_BYTES || full || a.len > MCX_COMPACT_MAX)
            FZ_ASSERT(ok < 0);
        if (ok < 0)
            break;
        want.item[want.n++] = a;
    }
    size_t len = mcx_compact_end(&w);
    FZ_ASSERT(len <= MCX_COMPACT_MAX);
    /* exactly len bytes on the heap: ASan sees any read past them */
    unsigned char *p = malloc(len);
    FZ_ASSERT(p != NULL);
    memcpy(p, buf, len);
    free(buf);
    int edited = 0;
    for (unsigned k = 0; k < 8 && fz_more(in); k++) {
        size_t at = (size_t)fz_u16(in) % len;
        p[at] = fz_u8(in);
        edited = 1;
    }
    /* a truncated frame is refused (unless the edits made it whole) */
    size_t cut = fz_more(in) ? (size_t)fz_u16(in) % (len + 1) : len;
    int whole = !edited && cut == len;
    /* a VALUE whose one atom did not fit is no frame: oob.c pickles it */
    int valid = want.kind == MCX_COMPACT_CALL || want.n == 1;
    parse_compact(p, cut, whole && valid ? &want : NULL);
    if (whole && !valid)
        FZ_ASSERT(mcx_compact_parse(p, cut, &(mcx_compact){0}) != 0);
    mcx_frame f;
    if (!edited)
        FZ_ASSERT(mcx_frame_parse(p, len, &f) != 0);   /* never taken for a pickle frame */
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    uint8_t kind = fz_u8(&in);

    if (kind & 1) {
        unsigned char *p = malloc(in.n ? in.n : 1);
        FZ_ASSERT(p != NULL);
        memcpy(p, in.p, in.n);
        parse_payload(p, in.n, NULL, NULL);
        parse_frame(p, in.n, NULL);
        parse_compact(p, in.n, NULL);
        free(p);
        return 0;
    }
    if (kind & 8) {
        fuzz_compact(&in, kind);
        return 0;
    }

    /* The description. */
    int payload = (kind & 2) != 0;
    mcx_wire_task want = {0};
    want.format = fz_u8(&in) % 3;
    want.use_dill = (kind & 4) != 0;
    want.fn_len = payload ? fz_u8(&in) : 0;
    fz_frame_desc d = {0};
    d.pickle_len = fz_u16(&in) % 1024;
    d.nbuf = fz_u8(&in) % (FZ_MAX_BUFS + 1);
    for (size_t i = 0; i < d.nbuf; i++) {
        uint8_t b = fz_u8(&in);
        d.buf[i].link = b & 1;
        d.buf[i].link_no = (b >> 1) % MC_SHARE_MAX;
        d.buf[i].link_off = d.buf[i].link ? fz_u16(&in) : 0;
        d.buf[i].len = fz_u16(&in) % 4096;
    }

    size_t args_off = payload ? mcx_wire_args_offset(want.fn_len) : 0;
    size_t len = args_off + frame_size(&d);
    unsigned char *p = malloc(len);
    FZ_ASSERT(p != NULL);
    memset(p, 0, len);
    if (payload) {
        unsigned char fn[256];
        for (size_t k = 0; k < want.fn_len; k++)
            fn[k] = pattern(k, 0);
        mcx_wire_write(p, want.format, want.use_dill, fn, want.fn_len, args_off);
    }
    frame_write(&d, p + args_off);

    /* The edits. */
    int edited = 0;
    for (unsigned k = 0; k < 16 && fz_more(&in); k++) {
        uint8_t e = fz_u8(&in);
        size_t at = (size_t)fz_u16(&in) % len;
        if (e & 1) {
            p[at] = fz_u8(&in);
        } else {
            uint64_t v = edit_value(&in, len);
            size_t n = len - at < 8 ? len - at : 8;
            memcpy(p + at, &v, n);
        }
        edited = 1;
    }

    if (payload)
        parse_payload(p, len, edited ? NULL : &want, edited ? NULL : &d);
    else
        parse_frame(p, len, edited ? NULL : &d);
    free(p);
    return 0;
}
