/*
 * keepalive.c: a small mutual-TLS HTTP/1.1 keep-alive load generator for bench.py.
 *
 * Build:  gcc -O2 -Wall -o keepalive keepalive.c -lssl -lcrypto
 *
 * One thread, one epoll loop, non-blocking OpenSSL. Two modes:
 *
 *   --mode load  Open --conns connections (at most --open-parallel handshakes at a time),
 *                each does a full TLS handshake with the client certificate and one warm-up
 *                request. Then print "READY <n>" and wait for a line on stdin (bench.py
 *                snapshots the server's CPU meanwhile). Then every connection sends
 *                "GET <path> HTTP/1.1" requests back to back (one outstanding request per
 *                connection, no pipelining) for --duration seconds or until --max-requests
 *                responses; a response is complete when Content-Length body bytes have
 *                arrived after the header. Print one JSON line with the counts and the
 *                latency percentiles, then wait for stdin EOF (or --hold seconds) before
 *                closing, so bench.py can read the server's CPU before teardown work.
 *
 *   --mode idle  Open --conns connections the same way (handshake + one request each, so
 *                the server has certainly accepted the client certificate), print
 *                "READY <n>", then hold them, doing nothing, until stdin reaches EOF
 *                (or --hold seconds pass); then close them all and print one JSON line.
 *
 * Diagnostics go to stderr; stdout carries only the READY line and the JSON line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

enum state { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_WRITING, ST_READING, ST_IDLE, ST_DONE };

struct conn {
    int fd;
    enum state st;
    SSL *ssl;
    char *buf;       /* response bytes received so far */
    size_t len, cap;
    size_t wpos;     /* bytes of the request written so far */
    double t_sent;   /* when the current request was (first) written */
    int warm;        /* the warm-up request has completed */
    uint32_t events; /* current epoll interest */
    int registered;  /* the fd is in the epoll set */
};

static const char *opt_host = "127.0.0.1", *opt_path = "/secure", *opt_mode = "load";
static const char *opt_ca, *opt_cert, *opt_key, *opt_servername;
static int opt_port, opt_conns = 1, opt_open_parallel = 32;
static double opt_duration = 5.0, opt_hold = 300.0, opt_setup_timeout = 120.0;
static long opt_max_requests = 50000000;

static SSL_CTX *ctx;
static struct conn *conns;
static int epfd;
static char request[512];
static size_t request_len;

static double *lat;   /* latencies in seconds, of responses completed in the window */
static long nlat, lat_cap;
static long n_ok, n_non200, n_errors, n_handshakes, n_handshake_failures, n_closed;
static int measuring;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
    fprintf(stderr, "keepalive: %s\n", msg);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: keepalive --port P --ca CA.pem --cert C.pem --key C.key [--host H] "
            "[--path /secure] [--mode load|idle] [--conns N] [--duration S] "
            "[--max-requests N] [--open-parallel N] [--hold S] [--setup-timeout S] "
            "[--servername NAME]\n");
    exit(2);
}

static void set_events(struct conn *c, uint32_t ev)
{
    if (c->registered && c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(epfd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) < 0)
        die("epoll_ctl failed");
    c->events = ev;
    c->registered = 1;
}

static void close_conn(struct conn *c)
{
    if (c->fd >= 0) {
        if (c->registered)
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    c->fd = -1;
    c->events = 0;
    c->registered = 0;
    c->st = ST_DONE;
    n_closed++;
}

static void fail_conn(struct conn *c, const char *what)
{
    if (!c->warm) {
        /* Under TLS 1.3 a refused client certificate only shows after the handshake. */
        n_handshake_failures++;
        if (n_handshake_failures <= 5)
            fprintf(stderr, "keepalive: handshake failed (%s)\n", what);
    } else {
        n_errors++;
        if (n_errors <= 5)
            fprintf(stderr, "keepalive: connection error (%s)\n", what);
    }
    ERR_clear_error();
    close_conn(c);
}

static int start_conn(struct conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(opt_port)};
    if (inet_pton(AF_INET, opt_host, &sa.sin_addr) != 1)
        die("--host must be an IPv4 address");
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("keepalive: socket");
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->events = 0;
    c->registered = 0;
    c->len = c->wpos = 0;
    c->warm = 0;
    c->st = ST_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        perror("keepalive: connect");
        close(c->fd);
        c->fd = -1;
        c->st = ST_FREE;
        return -1;
    }
    c->ssl = SSL_new(ctx);
    if (!c->ssl)
        die("SSL_new failed");
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_connect_state(c->ssl);
    if (opt_servername)
        SSL_set_tlsext_host_name(c->ssl, opt_servername);
    /* Check the server certificate against its IP address SAN (or DNS name). */
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    if (opt_servername)
        X509_VERIFY_PARAM_set1_host(vp, opt_servername, 0);
    else
        X509_VERIFY_PARAM_set1_ip_asc(vp, opt_host);
    set_events(c, EPOLLOUT);
    return 0;
}

/* Returns 1 if progress stopped because OpenSSL wants I/O, 0 if the connection was closed. */
static int want_io(struct conn *c, int ret, const char *what)
{
    int err = SSL_get_error(c->ssl, ret);
    if (err == SSL_ERROR_WANT_READ) {
        set_events(c, EPOLLIN);
        return 1;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        set_events(c, EPOLLOUT);
        return 1;
    }
    if (err == SSL_ERROR_ZERO_RETURN)
        fail_conn(c, "server closed the connection");
    else
        fail_conn(c, what);
    return 0;
}

static void begin_request(struct conn *c)
{
    c->st = ST_WRITING;
    c->wpos = 0;
    c->len = 0;
    c->t_sent = now();
}

/* Parses a complete response at the start of c->buf; returns its total length, 0 if more
 * bytes are needed, -1 on a malformed response. *status receives the status code. */
static long parse_response(struct conn *c, int *status)
{
    char *hdr_end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!hdr_end)
        return c->len > 65536 ? -1 : 0;
    size_t hlen = (size_t)(hdr_end - c->buf) + 4;
    if (c->len < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(c->buf + 9);
    long clen = -1;
    char *p = c->buf;
    while (p < hdr_end) {
        char *eol = memmem(p, (size_t)(hdr_end + 2 - p), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "content-length:", 15) == 0)
            clen = strtol(p + 15, NULL, 10);
        p = eol + 2;
    }
    if (clen < 0)
        return -1; /* we only speak Content-Length */
    if (c->len < hlen + (size_t)clen)
        return 0;
    return (long)(hlen + (size_t)clen);
}

static void record(double latency)
{
    if (nlat == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 65536;
        lat = realloc(lat, (size_t)lat_cap * sizeof *lat);
        if (!lat)
            die("out of memory");
    }
    lat[nlat++] = latency;
}

static int idle_mode;

static void drive(struct conn *c, uint32_t ev)
{
    for (;;) {
        switch (c->st) {
        case ST_CONNECTING: {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) {
                fail_conn(c, strerror(err));
                return;
            }
            c->st = ST_HANDSHAKE;
            break;
        }
        case ST_HANDSHAKE: {
            int r = SSL_do_handshake(c->ssl);
            if (r != 1) {
                want_io(c, r, "TLS handshake");
                return;
            }
            if (SSL_get_verify_result(c->ssl) != X509_V_OK) {
                fail_conn(c, "server certificate did not verify");
                return;
            }
            n_handshakes++;
            begin_request(c);
            break;
        }
        case ST_WRITING: {
            int r = SSL_write(c->ssl, request + c->wpos, (int)(request_len - c->wpos));
            if (r <= 0) {
                want_io(c, r, "write");
                return;
            }
            c->wpos += (size_t)r;
            if (c->wpos == request_len)
                c->st = ST_READING;
            break;
        }
        case ST_READING: {
            if (c->cap - c->len < 16384) {
                c->cap = c->cap ? c->cap * 2 : 32768;
                c->buf = realloc(c->buf, c->cap);
                if (!c->buf)
                    die("out of memory");
            }
            int r = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len));
            if (r <= 0) {
                want_io(c, r, "read");
                return;
            }
            c->len += (size_t)r;
            int status = 0;
            long total = parse_response(c, &status);
            if (total < 0) {
                fail_conn(c, "malformed response or no Content-Length");
                return;
            }
            if (total == 0)
                continue; /* need more bytes */
            if ((size_t)total != c->len) {
                fail_conn(c, "unexpected bytes after the response");
                return;
            }
            double done = now();
            if (!c->warm) {
                c->warm = 1;
                if (status != 200) {
                    n_non200++;
                    fail_conn(c, "warm-up request did not get 200");
                    return;
                }
                c->st = ST_IDLE;
                set_events(c, idle_mode ? EPOLLIN : 0);
                return;
            }
            if (measuring) {
                if (status == 200)
                    n_ok++;
                else
                    n_non200++;
                record(done - c->t_sent);
                if (n_ok + n_non200 >= opt_max_requests) {
                    measuring = 0;
                    c->st = ST_IDLE;
                    return;
                }
                begin_request(c);
            } else {
                c->st = ST_IDLE;
                return;
            }
            break;
        }
        case ST_IDLE:
            /* Idle connections only wake up when the server closes them (or sends a
             * late TLS 1.3 ticket); anything but EOF is read and dropped. */
            if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                char tmp[4096];
                int r = SSL_read(c->ssl, tmp, sizeof tmp);
                if (r > 0)
                    continue;
                int err = SSL_get_error(c->ssl, r);
                if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
                    return;
                fail_conn(c, "idle connection closed by the server");
            }
            return;
        default:
            return;
        }
    }
}

static int stdin_readable(int timeout_ms)
{
    struct pollfd p = {.fd = 0, .events = POLLIN};
    return poll(&p, 1, timeout_ms) > 0;
}

static void run_loop(double until, int stop_when_setup_done, int parallel_limit, int *opened)
{
    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        if (t >= until)
            return;
        if (stop_when_setup_done) {
            /* Open more connections while fewer than parallel_limit are in setup. */
            int in_setup = 0, ready = 0;
            for (int i = 0; i < *opened; i++) {
                enum state s = conns[i].st;
                if (s == ST_CONNECTING || s == ST_HANDSHAKE || s == ST_WRITING || s == ST_READING)
                    in_setup++;
                else if (s == ST_IDLE)
                    ready++;
            }
            while (*opened < opt_conns && in_setup < parallel_limit) {
                if (start_conn(&conns[*opened]) < 0)
                    die("cannot open a connection (file descriptor limit?)");
                (*opened)++;
                in_setup++;
            }
            if (in_setup == 0 && *opened == opt_conns)
                return;
            (void)ready;
        } else if (!measuring) {
            return;
        }
        int ms = (int)((until - t) * 1000) + 1;
        if (ms > 100)
            ms = 100;
        int n = epoll_wait(epfd, evs, 256, ms);
        if (n < 0 && errno != EINTR)
            die("epoll_wait failed");
        for (int i = 0; i < n; i++)
            drive((struct conn *)evs[i].data.ptr, evs[i].events);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double p)
{
    if (nlat == 0)
        return 0.0;
    long i = (long)(p / 100.0 * (double)(nlat - 1) + 0.5);
    return lat[i] * 1000.0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) opt_host = v;
        else if (!strcmp(a, "--port")) opt_port = atoi(v);
        else if (!strcmp(a, "--ca")) opt_ca = v;
        else if (!strcmp(a, "--cert")) opt_cert = v;
        else if (!strcmp(a, "--key")) opt_key = v;
        else if (!strcmp(a, "--path")) opt_path = v;
        else if (!strcmp(a, "--mode")) opt_mode = v;
        else if (!strcmp(a, "--conns")) opt_conns = atoi(v);
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--max-requests")) opt_max_requests = atol(v);
        else if (!strcmp(a, "--open-parallel")) opt_open_parallel = atoi(v);
        else if (!strcmp(a, "--hold")) opt_hold = atof(v);
        else if (!strcmp(a, "--setup-timeout")) opt_setup_timeout = atof(v);
        else if (!strcmp(a, "--servername")) opt_servername = v;
        else usage();
    }
    if (!opt_port || !opt_ca || !opt_cert || !opt_key || opt_conns < 1 || opt_open_parallel < 1)
        usage();
    if (strcmp(opt_mode, "load") && strcmp(opt_mode, "idle"))
        usage();
    idle_mode = !strcmp(opt_mode, "idle");

    /* Enough descriptors for every connection. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt_conns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)opt_conns + 64)
            die("RLIMIT_NOFILE is too low for --conns");
    }

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_load_verify_locations(ctx, opt_ca, NULL) != 1)
        die("cannot load --ca");
    if (SSL_CTX_use_certificate_chain_file(ctx, opt_cert) != 1)
        die("cannot load --cert");
    if (SSL_CTX_use_PrivateKey_file(ctx, opt_key, SSL_FILETYPE_PEM) != 1)
        die("cannot load --key");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: certsrv-bench\r\n"
                                   "Accept: */*\r\n\r\n", opt_path, opt_host, opt_port);

    conns = calloc((size_t)opt_conns, sizeof *conns);
    if (!conns)
        die("out of memory");
    for (int i = 0; i < opt_conns; i++) {
        conns[i].fd = -1;
        conns[i].st = ST_FREE;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1 failed");

    /* Setup: handshake + one warm-up request on every connection. */
    double t0 = now();
    int opened = 0;
    run_loop(t0 + opt_setup_timeout, 1, opt_open_parallel, &opened);
    double setup_s = now() - t0;
    int ready = 0;
    for (int i = 0; i < opt_conns; i++)
        ready += conns[i].st == ST_IDLE;
    if (ready < opt_conns)
        fprintf(stderr, "keepalive: only %d of %d connections ready after %.1fs\n", ready,
                opt_conns, setup_s);
    printf("READY %d %.3f\n", ready, setup_s);
    fflush(stdout);

    double window = 0.0;
    if (!idle_mode) {
        /* Wait for the go-ahead line (or EOF) from bench.py. */
        while (!stdin_readable(1000)) {
            if (now() - t0 > opt_setup_timeout + opt_hold)
                die("no go-ahead on stdin");
        }
        char line[64];
        if (!fgets(line, sizeof line, stdin))
            line[0] = 0;
        measuring = 1;
        double start = now();
        for (int i = 0; i < opt_conns; i++) {
            if (conns[i].st == ST_IDLE) {
                begin_request(&conns[i]);
                set_events(&conns[i], EPOLLOUT);
            }
        }
        run_loop(start + opt_duration, 0, 0, NULL);
        measuring = 0;
        window = now() - start;
        qsort(lat, (size_t)nlat, sizeof *lat, cmp_double);
        double sum = 0;
        for (long i = 0; i < nlat; i++)
            sum += lat[i];
        printf("{\"mode\": \"load\", \"conns\": %d, \"ready\": %d, \"setup_s\": %.4f, "
               "\"window_s\": %.4f, \"responses_200\": %ld, \"non200\": %ld, \"errors\": %ld, "
               "\"handshake_failures\": %ld, \"rps\": %.2f, \"mean_ms\": %.4f, "
               "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f}\n",
               opt_conns, ready, setup_s, window, n_ok, n_non200, n_errors,
               n_handshake_failures, window > 0 ? (double)n_ok / window : 0.0,
               nlat ? sum / (double)nlat * 1000.0 : 0.0, pct(50), pct(90), pct(99),
               nlat ? lat[nlat - 1] * 1000.0 : 0.0);
        fflush(stdout);
    }

    /* Hold until stdin reaches EOF (bench.py closes it) or --hold passes; watch for the
     * server closing idle connections meanwhile. */
    double hold_start = now();
    long closed_before = n_closed;
    while (now() - hold_start < opt_hold) {
        struct epoll_event evs[256];
        int n = epoll_wait(epfd, evs, 256, 50);
        for (int i = 0; i < n; i++)
            drive((struct conn *)evs[i].data.ptr, evs[i].events);
        if (stdin_readable(0)) {
            char line[64];
            if (!fgets(line, sizeof line, stdin))
                break;
        }
    }
    long dropped_while_idle = n_closed - closed_before;
    for (int i = 0; i < opt_conns; i++)
        if (conns[i].fd >= 0)
            close_conn(&conns[i]);
    if (idle_mode) {
        printf("{\"mode\": \"idle\", \"conns\": %d, \"ready\": %d, \"setup_s\": %.4f, "
               "\"held_s\": %.3f, \"dropped_while_idle\": %ld, \"handshake_failures\": %ld}\n",
               opt_conns, ready, setup_s, now() - hold_start, dropped_while_idle,
               n_handshake_failures);
        fflush(stdout);
    }
    SSL_CTX_free(ctx);
    return 0;
}
