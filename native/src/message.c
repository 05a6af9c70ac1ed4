/* Building requests and reading replies (docs/protocol.md, "Data plane"). */
#include <stdlib.h>
#include <string.h>

#include "orion.h"

#define HEADER_SIZE 24
#define MAGIC 0x314E524Fu
#define VERSION 1

static void reserve(orion_msg *m, size_t extra)
{
    if (m->failed || m->len + extra <= m->cap)
        return;
    size_t cap = m->cap * 2 > m->len + extra ? m->cap * 2 : m->len + extra;
    uint8_t *grown = malloc(cap);
    if (!grown) {
        m->failed = cudaErrorMemoryAllocation;
        return;
    }
    memcpy(grown, m->args, m->len);
    if (m->args != m->inline_args)
        free(m->args);
    m->args = grown;
    m->cap = cap;
}

void orion_begin(orion_msg *m, uint32_t call_id, unsigned flags)
{
    m->args = m->inline_args;
    m->cap = sizeof m->inline_args;
    m->len = HEADER_SIZE;
    m->n_in = m->n_out = 0;
    m->reply = NULL;
    m->reply_len = m->reply_pos = 0;
    m->failed = 0;
    m->lent = NULL;
    uint16_t device = 0;
    cudaError_t err = orion_init();
    m->session = err == cudaSuccess ? orion_session_of(orion_current_device(), &device) : NULL;
    if (!m->session)
        m->failed = err != cudaSuccess ? err : cudaErrorInvalidDevice;
    /* seq is filled in by the transport, under the session's lock */
    uint32_t magic = MAGIC;
    uint16_t version = VERSION, flags16 = (uint16_t)flags, reserved = 0;
    memcpy(m->args + 0, &magic, 4);
    memcpy(m->args + 4, &version, 2);
    memcpy(m->args + 6, &flags16, 2);
    memcpy(m->args + 8, &call_id, 4);
    memcpy(m->args + 12, &device, 2);
    memcpy(m->args + 14, &reserved, 2);
    memset(m->args + 16, 0, 8);
}

void orion_put(orion_msg *m, const void *value, size_t size)
{
    reserve(m, size);
    if (m->failed)
        return;
    memcpy(m->args + m->len, value, size);
    m->len += size;
}

void orion_put_in(orion_msg *m, const void *value, size_t size)
{
    uint8_t present = value != NULL;
    orion_put(m, &present, 1);
    if (present)
        orion_put(m, value, size);
}

void orion_put_str(orion_msg *m, const char *s)
{
    uint32_t n = s ? (uint32_t)strlen(s) : 0;
    orion_put(m, &n, sizeof n);
    if (n)
        orion_put(m, s, n);
}

void orion_put_buf(orion_msg *m, const void *data, size_t size)
{
    uint64_t n = size;
    if (m->n_in == ORION_MAX_BUFS || (size && !data)) {
        m->failed = cudaErrorInvalidValue;
        return;
    }
    orion_put(m, &n, sizeof n);
    m->in_buf[m->n_in] = data;
    m->in_len[m->n_in++] = size;
}

void orion_expect_buf(orion_msg *m, void *dest, size_t size)
{
    uint64_t n = size;
    if (m->n_out == ORION_MAX_BUFS || (size && !dest)) {
        m->failed = cudaErrorInvalidValue;
        return;
    }
    orion_put(m, &n, sizeof n);
    m->out_buf[m->n_out] = dest;
    m->out_len[m->n_out++] = size;
}

cudaError_t orion_send(orion_msg *m)
{
    if (m->failed)
        return (cudaError_t)m->failed;
    return orion_session_send(m->session, m);
}

cudaError_t orion_call(orion_msg *m)
{
    if (m->failed)
        return (cudaError_t)m->failed;
    return orion_session_call(m->session, m);
}

void orion_get(orion_msg *m, void *dest, size_t size)
{
    /* A short reply is a server bug; never read past it. */
    if (m->reply_pos + size > m->reply_len) {
        memset(dest, 0, size);
        return;
    }
    memcpy(dest, m->reply + m->reply_pos, size);
    m->reply_pos += size;
}

cudaError_t orion_end(orion_msg *m, cudaError_t err)
{
    if (m->args != m->inline_args)
        free(m->args);
    free(m->reply);
    m->args = NULL;
    m->reply = NULL;
    return err == cudaSuccess ? err : orion_fail(err);
}
