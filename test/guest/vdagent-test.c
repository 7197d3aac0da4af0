/*
 * A minimal spice-vdagent stand-in for the test guest: speaks the VD_AGENT_* clipboard messages over the
 * virtio-serial port named com.redhat.spice.0 (QEMU's qemu-vdagent on the other side), so the integration
 * tests can prove text travels host -> guest and guest -> host without X11 or the real agent.
 *
 *   vdagent-test PORTDEV FIFO
 *
 * Host -> guest: on a clipboard grab it asks for the text and prints "vmdesk-clip: from host: TEXT" on
 * stdout. Guest -> host: a line written to FIFO becomes the guest's clipboard (a grab; the text is sent when
 * the host asks). Text is printed with its trailing NUL removed; anything unprintable is shown as '?'.
 * Built static by test/guest/build.sh.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VD_AGENT_PROTOCOL 1
#define VD_AGENT_CLIPBOARD 4
#define VD_AGENT_ANNOUNCE_CAPABILITIES 6
#define VD_AGENT_CLIPBOARD_GRAB 7
#define VD_AGENT_CLIPBOARD_REQUEST 8
#define VD_AGENT_CLIPBOARD_RELEASE 9
#define VD_AGENT_CAP_CLIPBOARD_BY_DEMAND 5
#define VD_AGENT_CAP_CLIPBOARD_SELECTION 6
#define VD_AGENT_CLIPBOARD_UTF8_TEXT 1
#define VDP_CLIENT_PORT 1
#define MAX_MSG (1024 * 1024)

struct chunk_header {
  uint32_t port;
  uint32_t size;
} __attribute__((packed));

struct message_header {
  uint32_t protocol;
  uint32_t type;
  uint64_t opaque;
  uint32_t size;
} __attribute__((packed));

static int port_fd;
static char guest_text[65536];
static size_t guest_len;

static void write_all(const void *buf, size_t len) {
  const char *p = buf;
  while (len) {
    ssize_t n = write(port_fd, p, len);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      perror("vdagent-test: write");
      exit(1);
    }
    p += n;
    len -= (size_t)n;
  }
}

/* One message, split into chunks of at most 1024 bytes as the real agent does. */
static void send_msg(uint32_t type, const void *data, uint32_t size) {
  size_t total = sizeof(struct message_header) + size;
  char *buf = malloc(total);
  struct message_header h = {VD_AGENT_PROTOCOL, type, 0, size};
  memcpy(buf, &h, sizeof h);
  if (size) memcpy(buf + sizeof h, data, size);
  for (size_t off = 0; off < total;) {
    struct chunk_header c = {VDP_CLIENT_PORT, (uint32_t)(total - off > 1024 ? 1024 : total - off)};
    write_all(&c, sizeof c);
    write_all(buf + off, c.size);
    off += c.size;
  }
  free(buf);
}

static void send_caps(uint32_t request) {
  uint32_t data[2] = {request, (1u << VD_AGENT_CAP_CLIPBOARD_BY_DEMAND) | (1u << VD_AGENT_CAP_CLIPBOARD_SELECTION)};
  send_msg(VD_AGENT_ANNOUNCE_CAPABILITIES, data, sizeof data);
}

static void print_text(const char *what, const unsigned char *p, size_t n) {
  while (n && p[n - 1] == 0) n--;
  printf("vmdesk-clip: %s: ", what);
  for (size_t i = 0; i < n; i++) putchar(p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?');
  printf("\n");
  fflush(stdout);
}

static void on_message(uint32_t type, const unsigned char *d, uint32_t size) {
  /* Every clipboard message starts with the selection (1 byte + 3 reserved): we announced the cap. */
  switch (type) {
  case VD_AGENT_ANNOUNCE_CAPABILITIES:
    if (size >= 4 && *(const uint32_t *)d) send_caps(0);
    break;
  case VD_AGENT_CLIPBOARD_GRAB: {
    if (size < 4) break;
    uint32_t req[2] = {d[0], VD_AGENT_CLIPBOARD_UTF8_TEXT};
    send_msg(VD_AGENT_CLIPBOARD_REQUEST, req, sizeof req);
    break;
  }
  case VD_AGENT_CLIPBOARD:
    if (size >= 8 && *(const uint32_t *)(d + 4) == VD_AGENT_CLIPBOARD_UTF8_TEXT) print_text("from host", d + 8, size - 8);
    break;
  case VD_AGENT_CLIPBOARD_REQUEST: {
    if (size < 8) break;
    unsigned char *out = malloc(8 + guest_len);
    uint32_t head[2] = {d[0], VD_AGENT_CLIPBOARD_UTF8_TEXT};
    memcpy(out, head, 8);
    memcpy(out + 8, guest_text, guest_len);
    send_msg(VD_AGENT_CLIPBOARD, out, (uint32_t)(8 + guest_len));
    free(out);
    printf("vmdesk-clip: sent to host\n");
    fflush(stdout);
    break;
  }
  default:
    break;
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: vdagent-test PORTDEV FIFO\n");
    return 2;
  }
  port_fd = open(argv[1], O_RDWR);
  if (port_fd < 0) {
    perror("vdagent-test: open port");
    return 1;
  }
  int fifo = open(argv[2], O_RDWR | O_NONBLOCK);
  if (fifo < 0) {
    perror("vdagent-test: open fifo");
    return 1;
  }
  send_caps(1);
  printf("vmdesk-clip: ready\n");
  fflush(stdout);

  static unsigned char in[1 << 16];
  size_t have = 0;
  unsigned char *msg = NULL;
  size_t msg_len = 0, msg_want = 0;
  char line[sizeof guest_text];
  size_t line_len = 0;
  for (;;) {
    struct pollfd p[2] = {{port_fd, POLLIN, 0}, {fifo, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[1].revents & POLLIN) {
      char buf[4096];
      ssize_t n = read(fifo, buf, sizeof buf);
      for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
          memcpy(guest_text, line, line_len);
          guest_len = line_len;
          line_len = 0;
          uint32_t grab[2] = {0, VD_AGENT_CLIPBOARD_UTF8_TEXT};
          send_msg(VD_AGENT_CLIPBOARD_GRAB, grab, sizeof grab);
          printf("vmdesk-clip: grabbed\n");
          fflush(stdout);
        } else if (line_len < sizeof line) {
          line[line_len++] = buf[i];
        }
      }
    }
    if (!(p[0].revents & (POLLIN | POLLHUP))) continue;
    ssize_t n = read(port_fd, in + have, sizeof in - have);
    if (n <= 0) {
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      usleep(100000); /* host side not connected yet */
      continue;
    }
    have += (size_t)n;
    for (;;) {
      if (have < sizeof(struct chunk_header)) break;
      struct chunk_header c;
      memcpy(&c, in, sizeof c);
      if (c.size > sizeof in - sizeof c) return 1;
      if (have < sizeof c + c.size) break;
      const unsigned char *data = in + sizeof c;
      /* A chunk starts a message or continues the one being put together. */
      if (!msg_want) {
        struct message_header h;
        if (c.size < sizeof h) return 1;
        memcpy(&h, data, sizeof h);
        if (h.size > MAX_MSG) return 1;
        msg_want = sizeof h + h.size;
        msg = realloc(msg, msg_want);
        msg_len = 0;
      }
      size_t take = c.size < msg_want - msg_len ? c.size : msg_want - msg_len;
      memcpy(msg + msg_len, data, take);
      msg_len += take;
      if (msg_len == msg_want) {
        struct message_header h;
        memcpy(&h, msg, sizeof h);
        on_message(h.type, msg + sizeof h, h.size);
        msg_want = 0;
      }
      memmove(in, in + sizeof c + c.size, have - sizeof c - c.size);
      have -= sizeof c + c.size;
    }
  }
}
