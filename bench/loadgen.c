// loadgen: the benchmark's own small load programs (C, epoll, no dependencies).
//
//   loadgen hold HOST PORT N CONC
//       Opens N TCP connections to HOST:PORT, at most CONC being set up at once. Each one
//       sends "PING\r\n" (a Redis inline command) and waits for a line back, which proves
//       the tunnel is up end to end (a TLS 1.3 client's handshake finishes before the
//       server has judged its certificate). Prints "ready ok=N fail=F secs=S" and then
//       reads commands on stdin:
//         "check" -> pings every open connection again, prints "check ok=N fail=F"
//         EOF     -> closes everything and exits.
//
//   loadgen rr PORT CLIENTS WARMUP SECONDS
//       Closed-loop request/response against a Redis server (or a tunnel in front of one)
//       on 127.0.0.1:PORT: CLIENTS connections each keep one PING in flight. Connections
//       are opened first; once each has had its first reply (TLS handshakes done) WARMUP
//       seconds pass, then the
//       replies to requests sent in the next SECONDS are counted and timed. Prints
//       "rr clients=C requests=N rps=R p50_ms=.. p90_ms=.. p99_ms=.. p999_ms=.. max_ms=.. errors=E".
//
//   loadgen udp SEND_PORT SINK_PORT SIZE SECONDS RATE...
//       For each RATE: sends RATE datagrams/s of SIZE bytes to 127.0.0.1:SEND_PORT for
//       SECONDS, paced in 1 ms slots, and counts what arrives at a socket bound to
//       127.0.0.1:SINK_PORT (for a direct run SEND_PORT == SINK_PORT). Warm-up first: one
//       datagram every 50 ms until one arrives (a tunnel's first datagrams wait for its DTLS
//       handshake), at most $LOADGEN_WARMUP seconds (15). $LOADGEN_SRC_PORT fixes the
//       source port. Prints one line per rate: "udp offered_rate=... rate=R loss=L ..."
//       (datagrams that did not arrive within a 1 s drain count as lost).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char* what) {
  perror(what);
  exit(2);
}

// ---------------------------------------------------------------- hold
enum { ST_IDLE, ST_CONNECTING, ST_WAITING, ST_OPEN, ST_FAILED };
struct conn {
  int fd;
  int state;
  int got;  // bytes of the reply seen so far (we only wait for '\n')
};

static struct sockaddr_in target;

static int start_connect(struct conn* c, int ep, int idx) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc = connect(c->fd, (struct sockaddr*)&target, sizeof target);
  if (rc < 0 && errno != EINPROGRESS) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  c->state = ST_CONNECTING;
  c->got = 0;
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)idx};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  return 0;
}

static void send_ping(struct conn* c, int ep, int idx) {
  static const char ping[] = "PING\r\n";
  ssize_t n = send(c->fd, ping, sizeof ping - 1, MSG_NOSIGNAL);
  if (n != (ssize_t)(sizeof ping - 1)) {
    c->state = ST_FAILED;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    return;
  }
  c->state = ST_WAITING;
  c->got = 0;
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

// Drives connections until none is CONNECTING/WAITING or the deadline passes.
// Returns the number of connections still in flight at the deadline (counted as failed).
static int drive(struct conn* cs, int n, int conc, int ep, int* next, double deadline, int* inflight) {
  struct epoll_event evs[256];
  while (1) {
    while (*next < n && *inflight < conc) {
      struct conn* c = &cs[*next];
      if (start_connect(c, ep, *next) < 0)
        c->state = ST_FAILED;
      else
        (*inflight)++;
      (*next)++;
    }
    if (*inflight == 0 && *next >= n) return 0;
    double left = deadline - now_s();
    if (left <= 0) break;
    int k = epoll_wait(ep, evs, 256, (int)(left * 1000) + 1);
    for (int i = 0; i < k; i++) {
      int idx = (int)evs[i].data.u32;
      struct conn* c = &cs[idx];
      if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
          c->state = ST_FAILED;
          epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
          (*inflight)--;
          continue;
        }
        send_ping(c, ep, idx);
        if (c->state == ST_FAILED) (*inflight)--;
      } else if (c->state == ST_WAITING) {
        char buf[256];
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r <= 0) {
          if (r < 0 && errno == EAGAIN) continue;
          c->state = ST_FAILED;
          epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
          (*inflight)--;
          continue;
        }
        if (memchr(buf, '\n', (size_t)r)) {
          c->state = ST_OPEN;
          // Keep watching for the peer closing while idle? Not needed: "check" re-pings.
          epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
          (*inflight)--;
        }
      }
    }
  }
  int stuck = 0;
  for (int i = 0; i < n; i++)
    if (cs[i].state == ST_CONNECTING || cs[i].state == ST_WAITING) {
      cs[i].state = ST_FAILED;
      epoll_ctl(ep, EPOLL_CTL_DEL, cs[i].fd, NULL);
      stuck++;
    }
  *inflight = 0;
  return stuck;
}

static int count_state(struct conn* cs, int n, int st) {
  int k = 0;
  for (int i = 0; i < n; i++) k += cs[i].state == st;
  return k;
}

static int cmd_hold(int argc, char** argv) {
  if (argc != 6) return 2;
  int n = atoi(argv[4]), conc = atoi(argv[5]);
  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  target.sin_port = htons((uint16_t)atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) die("address");
  struct conn* cs = calloc((size_t)n, sizeof *cs);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int next = 0, inflight = 0;
  double t0 = now_s();
  drive(cs, n, conc, ep, &next, t0 + 300, &inflight);
  printf("ready ok=%d fail=%d secs=%.3f\n", count_state(cs, n, ST_OPEN), n - count_state(cs, n, ST_OPEN),
         now_s() - t0);
  fflush(stdout);
  char line[64];
  while (fgets(line, sizeof line, stdin)) {
    if (strncmp(line, "check", 5) != 0) continue;
    // Re-ping every open connection; at most CONC at once so a tunnel's queues stay sane.
    int done = 0, ok = 0, fail = 0;
    for (int i = 0; i < n; i++)
      if (cs[i].state != ST_OPEN) fail++;
    int idx = 0;
    double deadline = now_s() + 120;
    while (done < n - fail) {
      int batch = 0;
      int first = idx;
      for (; idx < n && batch < conc; idx++) {
        if (cs[idx].state != ST_OPEN) continue;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)idx};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[idx].fd, &ev);
        send_ping(&cs[idx], ep, idx);
        batch++;
      }
      int pending = 0;
      for (int i = first; i < idx; i++) pending += cs[i].state == ST_WAITING;
      // connections whose send failed are ST_FAILED already
      struct epoll_event evs[256];
      while (pending > 0 && now_s() < deadline) {
        int k = epoll_wait(ep, evs, 256, 1000);
        for (int j = 0; j < k; j++) {
          struct conn* c = &cs[evs[j].data.u32];
          if (c->state != ST_WAITING) continue;
          char buf[256];
          ssize_t r = recv(c->fd, buf, sizeof buf, 0);
          if (r < 0 && errno == EAGAIN) continue;
          if (r > 0 && memchr(buf, '\n', (size_t)r))
            c->state = ST_OPEN;
          else if (r > 0)
            continue;
          else
            c->state = ST_FAILED;
          epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
          pending--;
        }
      }
      for (int i = first; i < idx; i++) {
        if (cs[i].state == ST_WAITING) {
          cs[i].state = ST_FAILED;
          epoll_ctl(ep, EPOLL_CTL_DEL, cs[i].fd, NULL);
        }
      }
      done += batch;
      if (idx >= n) break;
    }
    ok = count_state(cs, n, ST_OPEN);
    printf("check ok=%d fail=%d\n", ok, n - ok);
    fflush(stdout);
  }
  for (int i = 0; i < n; i++)
    if (cs[i].fd > 0) close(cs[i].fd);
  return 0;
}

// ---------------------------------------------------------------- udp
struct sink {
  int fd;
  volatile int stop;
  uint64_t got;      // timed-phase datagrams received
  uint64_t warm;     // warm-up datagrams received
};

static void* sink_thread(void* p) {
  struct sink* s = p;
  char buf[65536];
  while (!s->stop) {
    struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
    if (poll(&pfd, 1, 50) <= 0) continue;
    while (1) {
      ssize_t r = recv(s->fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r < 0) break;
      if (r >= 1 && buf[0] == 'W')
        __atomic_add_fetch(&s->warm, 1, __ATOMIC_RELAXED);
      else
        __atomic_add_fetch(&s->got, 1, __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

static int cmd_udp(int argc, char** argv) {
  if (argc < 7) return 2;
  int send_port = atoi(argv[2]), sink_port = atoi(argv[3]);
  int size = atoi(argv[4]);
  double secs = atof(argv[5]);
  if (size < 16 || size > 65000) return 2;
  const char* e = getenv("LOADGEN_WARMUP");
  double warmup = e ? atof(e) : 15;
  e = getenv("LOADGEN_SRC_PORT");
  int src_port = e ? atoi(e) : 0;

  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)send_port)};
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  struct sockaddr_in sk = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sink_port)};
  inet_pton(AF_INET, "127.0.0.1", &sk.sin_addr);

  struct sink s = {0};
  int one = 1, big = 8 << 20;
  s.fd = socket(AF_INET, SOCK_DGRAM, 0);
  setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  if (bind(s.fd, (struct sockaddr*)&sk, sizeof sk) < 0) die("bind sink");
  int tx = socket(AF_INET, SOCK_DGRAM, 0);
  setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  if (src_port) {
    // A fixed source port: one flow across runs (socat serves a single peer).
    setsockopt(tx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((uint16_t)src_port)};
    inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
    if (bind(tx, (struct sockaddr*)&me, sizeof me) < 0) die("bind source");
  }
  if (connect(tx, (struct sockaddr*)&to, sizeof to) < 0) die("connect");

  pthread_t th;
  pthread_create(&th, NULL, sink_thread, &s);

  char* buf = calloc(1, (size_t)size);
  // Warm-up: until one datagram has crossed (DTLS handshake) or the warm-up time passes.
  memset(buf, 'W', (size_t)size);
  double w0 = now_s();
  while (__atomic_load_n(&s.warm, __ATOMIC_RELAXED) == 0 && now_s() - w0 < warmup) {
    send(tx, buf, (size_t)size, 0);  // ECONNREFUSED from an earlier ICMP is fine here
    usleep(50000);
  }
  if (__atomic_load_n(&s.warm, __ATOMIC_RELAXED) == 0) {
    s.stop = 1;
    pthread_join(th, NULL);
    printf("udp warmup=failed secs=%.1f\n", now_s() - w0);
    return 1;
  }
  printf("udp warmup=ok secs=%.3f\n", now_s() - w0);
  fflush(stdout);
  usleep(200000);  // let stragglers of the warm-up arrive before counting

  memset(buf, 'D', (size_t)size);
  for (int ri = 6; ri < argc; ri++) {
    double rate = atof(argv[ri]);
    __atomic_store_n(&s.got, 0, __ATOMIC_RELAXED);
    uint64_t sent = 0, seq = 0, send_errors = 0;
    double t0 = now_s();
    double end = t0 + secs;
    const double slot = 0.001;
    double next = t0;
    while (1) {
      double t = now_s();
      if (t >= end) break;
      if (t < next) {
        struct timespec ts = {0, (long)((next - t) * 1e9)};
        nanosleep(&ts, NULL);
        continue;
      }
      // Everything due up to the end of this 1 ms slot goes out now.
      uint64_t due = (uint64_t)(rate * (t - t0 + slot));
      while (sent < due) {
        memcpy(buf + 1, &seq, sizeof seq);
        // A full local socket buffer counts as offered and lost.
        if (send(tx, buf, (size_t)size, MSG_DONTWAIT) < 0) send_errors++;
        sent++;
        seq++;
        if ((seq & 255) == 0 && now_s() >= end) break;  // the sender itself cannot keep up
      }
      next += slot;
    }
    double elapsed = now_s() - t0;
    usleep(1000000);  // drain: later arrivals count as lost
    uint64_t got = __atomic_load_n(&s.got, __ATOMIC_RELAXED);
    printf("udp offered_rate=%.0f sent=%llu recv=%llu send_errors=%llu secs=%.3f offered=%.1f rate=%.1f loss=%.5f\n", rate,
           (unsigned long long)sent, (unsigned long long)got, (unsigned long long)send_errors, elapsed, sent / elapsed,
           got / elapsed, sent ? (got >= sent ? 0.0 : 1.0 - (double)got / (double)sent) : 1.0);
    fflush(stdout);
  }
  s.stop = 1;
  pthread_join(th, NULL);
  return 0;
}

// ---------------------------------------------------------------- rr
// Closed-loop request/response: CLIENTS connections, each with one PING in flight; after
// WARMUP seconds (connections set up, TLS handshakes done, caches warm) the replies of
// the next SECONDS are timed.
static int cmp_u32(const void* a, const void* b) {
  uint32_t x = *(const uint32_t*)a, y = *(const uint32_t*)b;
  return x < y ? -1 : x > y;
}

struct rr_conn {
  int fd;
  int connected;
  double sent_at;
};

static int cmd_rr(int argc, char** argv) {
  if (argc != 6) return 2;
  int port = atoi(argv[2]), clients = atoi(argv[3]);
  double warm = atof(argv[4]), secs = atof(argv[5]);
  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  target.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &target.sin_addr);
  static const char ping[] = "*1\r\n$4\r\nPING\r\n";
  struct rr_conn* cs = calloc((size_t)clients, sizeof *cs);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  size_t cap = 1 << 20, n = 0;
  uint32_t* lat_ns = malloc(cap * sizeof *lat_ns);  // latencies in ns (saturating at ~4.29 s)
  uint64_t errors = 0;
  // The clock starts once every connection has had its first reply (all handshakes done),
  // plus WARMUP; 120 s at most for that.
  double t_start = now_s(), t_measure = 1e300, t_end = t_start + 120 + warm + secs;
  int first_replies = 0;
  int* answered = calloc((size_t)clients, sizeof *answered);
  for (int i = 0; i < clients; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr*)&target, sizeof target) < 0) die("connect");
    fcntl(fd, F_SETFL, O_NONBLOCK);
    cs[i].fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    cs[i].sent_at = now_s();
    if (send(fd, ping, sizeof ping - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof ping - 1)) die("send");
  }
  struct epoll_event evs[256];
  uint64_t measured_done = 0;
  while (1) {
    double t = now_s();
    if (t >= t_end) break;
    int k = epoll_wait(ep, evs, 256, 100);
    for (int j = 0; j < k; j++) {
      struct rr_conn* c = &cs[evs[j].data.u32];
      char buf[512];
      ssize_t r = recv(c->fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EAGAIN) continue;
      if (r <= 0) {
        errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        continue;
      }
      if (!memchr(buf, '\n', (size_t)r)) continue;  // "+PONG\r\n" arrives whole in practice
      double done = now_s();
      if (!answered[evs[j].data.u32]) {
        answered[evs[j].data.u32] = 1;
        if (++first_replies == clients) {
          t_measure = done + warm;
          t_end = t_measure + secs;
        }
      }
      if (c->sent_at >= t_measure && done <= t_end) {
        if (n == cap) {
          cap *= 2;
          lat_ns = realloc(lat_ns, cap * sizeof *lat_ns);
        }
        double d = (done - c->sent_at) * 1e9;
        lat_ns[n++] = d > 4.29e9 ? 4290000000u : (uint32_t)d;
        measured_done++;
      }
      c->sent_at = now_s();
      if (send(c->fd, ping, sizeof ping - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof ping - 1)) {
        errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
      }
    }
  }
  if (first_replies < clients) {
    printf("rr clients=%d answered=%d errors=%llu setup=failed\n", clients, first_replies, (unsigned long long)errors);
    return 1;
  }
  qsort(lat_ns, n, sizeof *lat_ns, cmp_u32);
#define PCT(p) (n ? lat_ns[(size_t)((p) * (double)(n - 1))] / 1e6 : 0.0)
  printf("rr clients=%d setup_secs=%.3f requests=%zu secs=%.3f rps=%.1f p50_ms=%.4f p90_ms=%.4f p99_ms=%.4f p999_ms=%.4f max_ms=%.4f errors=%llu\n",
         clients, t_measure - warm - t_start, n, secs, n / secs, PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999), n ? lat_ns[n - 1] / 1e6 : 0.0,
         (unsigned long long)errors);
  for (int i = 0; i < clients; i++) close(cs[i].fd);
  return errors ? 1 : 0;
}

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (argc >= 2 && strcmp(argv[1], "hold") == 0) return cmd_hold(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "udp") == 0) return cmd_udp(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "rr") == 0) return cmd_rr(argc, argv);
  fprintf(stderr, "usage: loadgen hold HOST PORT N CONC | loadgen rr PORT CLIENTS WARMUP SECONDS | loadgen udp SEND_PORT SINK_PORT SIZE SECONDS RATE...\n");
  return 2;
}
