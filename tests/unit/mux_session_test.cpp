// The mux session between two real sessions over TLS 1.3 on loopback: the datagram path
// (flows: what crosses, what is dropped and counted, that datagrams never wait for stream
// credit), and which streams a drained outbound queue wakes.
#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/this_coro.hpp>
#include <algorithm>
#include <cstring>
#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mux/session.hpp"
#include "net/endpoint.hpp"
#include "net/listener.hpp"
#include "test_pki.hpp"
#include "tls/handshake.hpp"
#include "tls/tls_stream.hpp"

using namespace tunnel;
using namespace std::chrono_literals;

namespace {

std::span<const std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string text(std::span<const std::byte> d) { return {reinterpret_cast<const char*>(d.data()), d.size()}; }

// Free coroutines (GCC 12 mishandles capturing coroutine lambdas).
asio::awaitable<void> shake(tls::tls_stream& s, bool& ok, bool& done) {
  ok = (co_await tls::run_handshake(s, 5s)).ok;
  done = true;
}

asio::awaitable<void> run(mux::session& s, bool& done) {
  co_await s.run();
  done = true;
}

asio::awaitable<void> write(mux::stream& st, std::string data, bool& done) {
  co_await st.write_all(bytes(data));
  done = true;
}

asio::awaitable<void> read_up_to(mux::stream& st, std::size_t n, std::size_t& got) {
  std::vector<std::byte> buffer(64 * 1024);
  while (got < n) {
    const auto r = co_await st.read_some(buffer);
    if (r.ec) co_return;
    got += r.bytes;
  }
}

asio::awaitable<void> read_exactly(mux::stream& st, std::size_t n, std::size_t& got) {
  std::vector<std::byte> buffer(64 * 1024);
  while (got < n) {
    const auto r = co_await st.read_some(std::span(buffer).first(std::min(buffer.size(), n - got)));
    if (r.ec) co_return;
    got += r.bytes;
  }
}

asio::awaitable<void> send_raw(tls::tls_stream& tls, std::vector<std::byte> frames, bool& done) {
  co_await tls.write_all(frames);
  done = true;
}

// A peer that writes PING frames in batches and never reads, until `stop`.
asio::awaitable<void> ping_without_reading(tls::tls_stream& tls, const bool& stop, std::size_t& sent) {
  std::vector<std::byte> batch;
  for (int i = 0; i < 1000; ++i) mux::encode_ping(batch, 1 + static_cast<std::uint64_t>(i), false);
  while (!stop && sent < 1'000'000) {
    if (co_await tls.write_all(batch)) co_return;
    sent += 1000;
  }
}

// The frames a raw side receives, by type and stream id.
struct seen_frame {
  mux::frame_type type;
  std::uint32_t stream;
  mux::reset_code code;
};

asio::awaitable<void> collect_frames(tls::tls_stream& tls, std::vector<seen_frame>& seen) {
  std::vector<std::byte> acc(2 * mux::max_frame_size);
  std::size_t filled = 0;
  for (;;) {
    const auto r = co_await tls.read_some(std::span(acc).subspan(filled));
    if (r.ec) co_return;
    filled += r.bytes;
    std::size_t begin = 0;
    for (;;) {
      const auto d = mux::decode(std::span<const std::byte>(acc).subspan(begin, filled - begin));
      if (d.status != mux::decode_status::ok) break;
      seen.push_back({d.f.type, d.f.stream, d.f.code});
      begin += d.consumed;
    }
    std::memmove(acc.data(), acc.data() + begin, filled - begin);
    filled -= begin;
  }
}

// Two sessions, tunnel-in's (client) and tunnel-out's (server), over one TLS connection.
struct session_pair {
  test::temp_pki pki;
  asio::io_context io;
  std::unique_ptr<tls::tls_stream> client_tls, server_tls;
  std::unique_ptr<mux::session> client, server;
  bool client_done = false, server_done = false;
  std::vector<std::unique_ptr<mux::flow>> accepted;      // flows the server accepted
  std::vector<std::string> server_got;                   // datagrams they received, in order
  std::vector<std::unique_ptr<mux::stream>> streams;     // streams the server accepted (never read)
  std::function<void(mux::flow&)> on_flow;               // what the server does with a new flow

  // `wait_ready`: return once the client session is ready (its peer has answered).
  // `raw`: one side runs no session, so a test can speak the protocol (or break it) there
  // through client_tls / server_tls itself.
  enum class raw_side { none, client, server };
  explicit session_pair(mux::session_settings client_settings = {}, mux::session_settings server_settings = {},
                        bool wait_ready = true, raw_side raw = raw_side::none) {
    tls::tls_options server_opts, client_opts;
    server_opts.side = tls::role::server;
    server_opts.mux_alpn = true;
    server_opts.routes.front().name = "syslog";
    client_opts.side = tls::role::client;
    client_opts.mux_alpn = true;
    client_opts.server_name = "tunnel-out.test";
    auto server_files = pki.files("server", {.common_name = "tunnel-out", .dns = {"tunnel-out.test"},
                                             .purpose = tls::usage::server});
    auto client_files = pki.files("client", {.common_name = "client-a", .purpose = tls::usage::client});
    auto server_ctx = std::make_shared<tls::tls_context>(server_opts, tls::credentials::load(server_files));
    auto client_ctx = std::make_shared<tls::tls_context>(client_opts, tls::credentials::load(client_files));

    net::generic_acceptor acceptor(io, net::to_generic(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)));
    net::generic_socket c(io);
    c.connect(acceptor.local_endpoint());
    net::generic_socket s = acceptor.accept();
    client_tls = std::make_unique<tls::tls_stream>(std::move(c), client_ctx);
    server_tls = std::make_unique<tls::tls_stream>(std::move(s), server_ctx);
    bool cok = false, sok = false, cdone = false, sdone = false;
    asio::co_spawn(io, shake(*client_tls, cok, cdone), asio::detached);
    asio::co_spawn(io, shake(*server_tls, sok, sdone), asio::detached);
    REQUIRE(run_until([&] { return cdone && sdone; }));
    REQUIRE(cok);
    REQUIRE(sok);

    client_settings.client = true;
    server_settings.client = false;
    if (raw == raw_side::client) client_done = true;
    else {
      client = std::make_unique<mux::session>(*client_tls, client_settings);
      asio::co_spawn(io, run(*client, client_done), asio::detached);
    }
    if (raw == raw_side::server) {
      server_done = true;
      return;
    }
    server = std::make_unique<mux::session>(*server_tls, server_settings);
    server->on_accept_flow([this](std::unique_ptr<mux::flow> f) {
      mux::flow& fl = *f;
      accepted.push_back(std::move(f));
      fl.on_receive([this](std::span<const std::byte> d) { server_got.push_back(text(d)); });
      if (on_flow) on_flow(fl);
    });
    server->on_accept([this](std::unique_ptr<mux::stream> st) { streams.push_back(std::move(st)); });
    asio::co_spawn(io, run(*server, server_done), asio::detached);
    if (wait_ready && client) REQUIRE(run_until([&] { return client->ready(); }));
  }

  ~session_pair() {
    // End both sessions before their objects go: their coroutines refer to them.
    client_tls->close();
    server_tls->close();
    run_until([&] { return client_done && server_done; });
    accepted.clear();
    streams.clear();
  }

  // Opens `count` client streams that each send a whole stream window to server streams
  // nobody reads; returns once every byte is sent and every stream accepted.
  std::vector<std::unique_ptr<mux::stream>> fill_windows(std::size_t count) {
    std::vector<std::unique_ptr<mux::stream>> out;
    auto sent = std::make_unique<bool[]>(count);
    for (std::size_t i = 0; i < count; ++i) {
      out.push_back(client->open("syslog", "127.0.0.1:4011"));
      REQUIRE(out.back());
      asio::co_spawn(io, write(*out.back(), std::string(mux::initial_stream_window, 'w'), sent[i]), asio::detached);
    }
    const std::size_t before = streams.size();
    REQUIRE(run_until([&] { return std::all_of(sent.get(), sent.get() + count, [](bool w) { return w; }); }));
    REQUIRE(run_until([&] { return streams.size() == before + count; }));
    return out;
  }

  // Whether a new stream carries `total` bytes to a server stream that reads them all.
  bool carries(std::size_t total) {
    auto st = client->open("syslog", "127.0.0.1:4012");
    if (!st) return false;
    bool written = false;
    asio::co_spawn(io, write(*st, std::string(total, 'c'), written), asio::detached);
    const std::size_t before = streams.size();
    if (!run_until([&] { return streams.size() == before + 1; })) return false;
    std::size_t got = 0;
    asio::co_spawn(io, read_up_to(*streams.back(), total, got), asio::detached);
    const bool ok = run_until([&] { return written && got == total; });
    st->close();
    run_until([&] { return false; }, 50ms);
    return ok;
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      io.restart();
      io.run_for(5ms);
    }
    return true;
  }
};

}  // namespace

TEST_CASE("a flow carries datagrams both ways, empty ones too, and FLOW_CLOSE ends it at the peer") {
  session_pair p;
  auto f = p.client->open_flow("syslog", "127.0.0.1:4000");
  REQUIRE(f);
  std::vector<std::string> client_got;
  int events = 0;
  f->on_receive([&](std::span<const std::byte> d) { client_got.push_back(text(d)); });
  f->on_event([&] { ++events; });
  CHECK(f->ready());  // the session's peer has answered
  CHECK(f->send(bytes("hello")) == mux::flow::send_result::sent);
  CHECK(f->send({}) == mux::flow::send_result::sent);
  REQUIRE(p.run_until([&] { return p.server_got.size() == 2; }));
  CHECK(p.server_got == std::vector<std::string>{"hello", ""});
  REQUIRE(p.accepted.size() == 1);
  auto& served = *p.accepted.front();
  CHECK(served.service() == "syslog");
  CHECK(served.origin() == "127.0.0.1:4000");
  CHECK(served.id() == f->id());

  CHECK(served.send(bytes("reply")) == mux::flow::send_result::sent);
  REQUIRE(p.run_until([&] { return client_got.size() == 1; }));
  CHECK(client_got.front() == "reply");

  served.close(mux::reset_code::timeout, "idle timeout");
  REQUIRE(p.run_until([&] { return f->ended(); }));
  CHECK(events >= 1);
  CHECK(f->closed_by_peer());
  CHECK(f->peer_code() == mux::reset_code::timeout);
  CHECK(f->reason() == "idle timeout");
  CHECK(f->send(bytes("late")) == mux::flow::send_result::ended);
  CHECK(p.client->flow_count() == 0);
  CHECK(p.server->flow_count() == 0);
}

TEST_CASE("datagrams beyond the queue bound are dropped at once and the rest arrive") {
  mux::session_settings settings;
  settings.datagram_queue_limit = 10 * (mux::header_size + 100);
  session_pair p(settings);
  auto f = p.client->open_flow("syslog", "127.0.0.1:4001");
  REQUIRE(f);
  const std::string d(100, 'd');
  int sent = 0, dropped = 0;
  // No event loop turn in between: the writer has not taken any of them yet.
  for (int i = 0; i < 25; ++i) {
    const auto r = f->send(bytes(d));
    if (r == mux::flow::send_result::sent) ++sent;
    else if (r == mux::flow::send_result::queue_full) ++dropped;
  }
  CHECK(sent == 10);
  CHECK(dropped == 15);
  CHECK(p.client->stats().datagrams_queue_full == 15);
  REQUIRE(p.run_until([&] { return p.server_got.size() == 10; }));
  // Once the writer has taken them the queue has room again.
  CHECK(f->send(bytes(d)) == mux::flow::send_result::sent);
  REQUIRE(p.run_until([&] { return p.server_got.size() == 11; }));
  // A datagram that cannot fit one frame is never split.
  CHECK(f->send(bytes(std::string(mux::max_payload + 1, 'x'))) == mux::flow::send_result::oversized);
}

TEST_CASE("datagrams pass while a stream waits for credit") {
  session_pair p;
  auto st = p.client->open("syslog", "127.0.0.1:4002");
  REQUIRE(st);
  bool written = false;
  // Four windows' worth: the server never reads, so this stops after the first window.
  asio::co_spawn(p.io, write(*st, std::string(4 * mux::initial_stream_window, 's'), written), asio::detached);
  REQUIRE(p.run_until([&] { return !p.streams.empty(); }));
  p.run_until([] { return false; }, 200ms);
  CHECK_FALSE(written);
  auto f = p.client->open_flow("syslog", "127.0.0.1:4003");
  REQUIRE(f);
  for (int i = 0; i < 100; ++i) CHECK(f->send(bytes("dgram " + std::to_string(i))) == mux::flow::send_result::sent);
  REQUIRE(p.run_until([&] { return p.server_got.size() == 100; }));
  CHECK(p.server_got.back() == "dgram 99");
  CHECK_FALSE(written);
  st->close();
  REQUIRE(p.run_until([&] { return written; }));  // the writer coroutine lets go of the stream
}

TEST_CASE("datagrams for a refused flow are dropped and counted, and the connection carries on") {
  session_pair p;
  p.on_flow = [](mux::flow& f) { f.close(mux::reset_code::refused, "peer certificate not on the allow-list"); };
  auto f = p.client->open_flow("syslog", "127.0.0.1:4004");
  REQUIRE(f);
  // Sent before the refusal can arrive: the server no longer knows the flow.
  CHECK(f->send(bytes("one")) == mux::flow::send_result::sent);
  CHECK(f->send(bytes("two")) == mux::flow::send_result::sent);
  REQUIRE(p.run_until([&] { return f->ended(); }));
  CHECK(f->peer_code() == mux::reset_code::refused);
  CHECK(f->reason() == "peer certificate not on the allow-list");
  REQUIRE(p.run_until([&] { return p.server->stats().datagrams_unknown_flow == 2; }));
  CHECK(p.server_got.empty());
  CHECK(p.server->failure().empty());
  CHECK(p.client->failure().empty());
  // The next flow on the same connection works.
  p.on_flow = nullptr;
  auto g = p.client->open_flow("syslog", "127.0.0.1:4004");
  REQUIRE(g);
  CHECK(g->send(bytes("three")) == mux::flow::send_result::sent);
  REQUIRE(p.run_until([&] { return p.server_got.size() == 1; }));
  CHECK(p.server_got.front() == "three");
}

TEST_CASE("the end of the connection ends its flows with the reason") {
  session_pair p;
  auto f = p.client->open_flow("syslog", "127.0.0.1:4005");
  REQUIRE(f);
  REQUIRE(p.run_until([&] { return p.accepted.size() == 1; }));
  p.server_tls->close();
  REQUIRE(p.run_until([&] { return f->ended(); }));
  CHECK_FALSE(f->closed_by_peer());
  CHECK(f->error());
  CHECK_FALSE(f->reason().empty());
  CHECK(p.client->open_flow("syslog", "127.0.0.1:4006") == nullptr);
}

TEST_CASE("a flow opened before the peer has answered goes out once it has") {
  session_pair p({}, {}, false);
  auto f = p.client->open_flow("syslog", "127.0.0.1:4007");
  REQUIRE(f);
  CHECK_FALSE(f->ready());  // FLOW_OPEN waits for the peer's answer and its flows hello
  REQUIRE(p.run_until([&] { return f->ready(); }));
  CHECK(p.client->peer_carries_flows());
  CHECK(f->send(bytes("after the answer")) == mux::flow::send_result::sent);
  REQUIRE(p.run_until([&] { return p.server_got.size() == 1; }));
  CHECK(p.server_got.front() == "after the answer");
}

TEST_CASE("a peer without the flows hello never gets a FLOW_OPEN, and its streams carry on") {
  mux::session_settings old_peer;
  old_peer.carries_flows = false;  // a version-1 tunnel-out: FLOW_OPEN would end the connection
  session_pair p({}, old_peer, false);
  auto f = p.client->open_flow("syslog", "127.0.0.1:4008");
  REQUIRE(f);
  REQUIRE(p.run_until([&] { return f->ended(); }));
  CHECK(f->reason() == "tunnel-out does not carry UDP flows over TLS (it is older than tunnel-in)");
  CHECK_FALSE(p.client->peer_carries_flows());
  CHECK(p.client->open_flow("syslog", "127.0.0.1:4009") == nullptr);  // known now: not even tried
  CHECK(p.server->stats().flows_opened == 0);
  CHECK(p.server->failure().empty());
  CHECK(p.client->failure().empty());
  auto st = p.client->open("syslog", "127.0.0.1:4010");
  CHECK(st);
}

TEST_CASE("a drained outbound queue wakes the streams that wait for it, not the idle ones") {
  session_pair p;
  std::vector<std::unique_ptr<mux::stream>> idle;
  for (int i = 0; i < 500; ++i) idle.push_back(p.client->open("syslog", "127.0.0.1:4004"));
  // Eight streams write a window each (2 MiB, within the connection's credit): more than
  // the outbound queue holds, so writers wait for the writer to drain it, again and again.
  std::vector<std::unique_ptr<mux::stream>> busy;
  std::array<bool, 8> written{};
  for (std::size_t i = 0; i < written.size(); ++i) {
    busy.push_back(p.client->open("syslog", "127.0.0.1:4005"));
    REQUIRE(busy.back());
    asio::co_spawn(p.io, write(*busy.back(), std::string(mux::initial_stream_window, 'a' + static_cast<char>(i)), written[i]),
                   asio::detached);
  }
  REQUIRE(p.run_until([&] { return std::all_of(written.begin(), written.end(), [](bool w) { return w; }); }));
  REQUIRE(p.run_until([&] { return p.streams.size() == 508; }));
  const auto woken = p.client->stats().room_wakeups;
  CHECK(woken > 0);  // the queue did fill
  // Each wake-up went to a stream that waited: at most one per frame written (8 streams of
  // 17 frames each). Waking every stream would be 508 per pass of the writer.
  CHECK(woken <= 8 * 17);
}

TEST_CASE("streams stalled on most of the connection window do not stop the others") {
  session_pair p;
  // Fourteen streams send a window each to readers that never read: 3.5 MiB of the
  // connection's 4 MiB held. The half MiB left must keep coming back to the other streams
  // as their readers take it, not only once a quarter window (1 MiB) has been taken.
  const auto stalled = p.fill_windows(14);
  CHECK(p.carries(2 * 1024 * 1024));
  CHECK(p.client->failure().empty());
  CHECK(p.server->failure().empty());
}

TEST_CASE("a RESET from the peer gives back the connection credit of bytes nobody read") {
  session_pair p;
  // Sixteen streams fill the whole 4 MiB connection window towards readers that never
  // read, then tunnel-in resets them all. Their bytes are dropped at tunnel-out and their
  // credit must come back, or no stream could send on this connection again.
  const auto filled = p.fill_windows(16);
  REQUIRE(p.run_until([&] { return p.client->connection_credit() == 0; }));
  for (auto& st : filled) st->close();  // RESET: they did not end cleanly
  REQUIRE(p.run_until([&] { return p.client->connection_credit() == mux::initial_connection_window; }));
  for (auto& st : p.streams) CHECK(st->receive_buffer_capacity() == 0);  // the unread bytes went
  CHECK(p.carries(1024 * 1024));
  CHECK(p.server->failure().empty());
}

TEST_CASE("a stream whose relay took most of a large buffer keeps only the unread rest, and an idle one none") {
  session_pair p;
  auto st = p.client->open("syslog", "127.0.0.1:4023");
  REQUIRE(st);
  bool written = false;
  asio::co_spawn(p.io, write(*st, std::string(mux::initial_stream_window, 'b'), written), asio::detached);
  REQUIRE(p.run_until([&] { return written && p.streams.size() == 1; }));
  mux::stream& in = *p.streams.front();
  REQUIRE(p.run_until([&] { return in.receive_buffer_capacity() >= mux::initial_stream_window; }));
  // The relay takes all but 16 KiB, then (its target stalled) takes nothing more.
  std::size_t got = 0;
  asio::co_spawn(p.io, read_exactly(in, mux::initial_stream_window - 16 * 1024, got), asio::detached);
  REQUIRE(p.run_until([&] { return got == mux::initial_stream_window - 16 * 1024; }));
  CHECK(in.receive_buffer_capacity() <= 64 * 1024);
  // Once everything is taken, the idle stream holds no buffer at all.
  std::size_t rest = 0;
  asio::co_spawn(p.io, read_exactly(in, 16 * 1024, rest), asio::detached);
  REQUIRE(p.run_until([&] { return rest == 16 * 1024; }));
  CHECK(in.receive_buffer_capacity() == 0);
  st->close();
  p.run_until([&] { return false; }, 50ms);
}

TEST_CASE("a peer that sends without reading ends the session instead of growing its queue") {
  mux::session_settings client_settings;
  client_settings.reply_queue_limit = 64 * 1024;
  session_pair p(client_settings, {}, false, session_pair::raw_side::server);
  // Small socket buffers: the kernel holds little of what the peer does not read.
  p.server_tls->socket().set_option(asio::socket_base::receive_buffer_size(8192));
  p.client_tls->socket().set_option(asio::socket_base::send_buffer_size(8192));
  bool stop = false;
  std::size_t pings = 0;
  asio::co_spawn(p.io, ping_without_reading(*p.server_tls, stop, pings), asio::detached);
  const bool failed = p.run_until([&] { return !p.client->failure().empty(); }, 20s);
  stop = true;
  REQUIRE(failed);
  CHECK(p.client->failure().find("the peer sends but does not read") != std::string::npos);
  CAPTURE(pings);
}

TEST_CASE("a client that never answers the drain ping cannot keep opening streams") {
  mux::session_settings server_settings;
  server_settings.keepalive = 1s;  // the drain bound is looked at every 250 ms
  server_settings.drain_limit = 100ms;
  session_pair p({}, server_settings, false, session_pair::raw_side::client);
  std::vector<seen_frame> seen;
  asio::co_spawn(p.io, collect_frames(*p.client_tls, seen), asio::detached);
  std::vector<std::byte> open1;
  mux::encode_open(open1, 1, "syslog", "127.0.0.1:4031");
  bool sent1 = false;
  asio::co_spawn(p.io, send_raw(*p.client_tls, open1, sent1), asio::detached);
  REQUIRE(p.run_until([&] { return p.streams.size() == 1; }));
  p.server->goaway(mux::reset_code::shutdown, "reload");
  const auto got = [&](mux::frame_type t) {
    return std::any_of(seen.begin(), seen.end(), [&](const seen_frame& f) { return f.type == t; });
  };
  REQUIRE(p.run_until([&] { return got(mux::frame_type::goaway) && got(mux::frame_type::ping); }));
  // The ping stays unanswered. Past the drain bound, a new OPEN is refused.
  p.run_until([&] { return false; }, 600ms);
  std::vector<std::byte> open2;
  mux::encode_open(open2, 2, "syslog", "127.0.0.1:4032");
  bool sent2 = false;
  asio::co_spawn(p.io, send_raw(*p.client_tls, open2, sent2), asio::detached);
  CHECK(p.run_until([&] {
    return std::any_of(seen.begin(), seen.end(), [](const seen_frame& f) {
      return f.type == mux::frame_type::reset && f.stream == 2 && f.code == mux::reset_code::shutdown;
    });
  }));
  CHECK(p.streams.size() == 1);
}

TEST_CASE("an OPEN with a stream id above 2^31-1 is a protocol error") {
  session_pair p({}, {}, false, session_pair::raw_side::client);
  std::vector<std::byte> open;
  mux::encode_open(open, 0x80000000u, "syslog", "127.0.0.1:4041");
  bool sent = false;
  asio::co_spawn(p.io, send_raw(*p.client_tls, open, sent), asio::detached);
  REQUIRE(p.run_until([&] { return !p.server->failure().empty(); }));
  CHECK(p.server->failure().find("id above 2^31-1") != std::string::npos);
  CHECK(p.streams.empty());
}

namespace {

asio::awaitable<void> read_result(mux::stream& st, std::error_code& ec, std::size_t& got, bool& done) {
  std::vector<std::byte> buffer(64 * 1024);
  for (;;) {
    const auto r = co_await st.read_some(buffer);
    got += r.bytes;
    if (r.ec) {
      ec = r.ec;
      break;
    }
  }
  done = true;
}

asio::awaitable<void> send_then_fin(mux::stream& st, std::string data, bool& done) {
  co_await st.write_all(bytes(data));
  co_await st.shutdown_send();
  done = true;
}

}  // namespace

TEST_CASE("DATA, FIN, then RESET before the relay read: it reads the reset, not a clean end") {
  session_pair p;
  auto st = p.client->open("syslog", "127.0.0.1:4023");
  REQUIRE(st);
  bool sent = false;
  asio::co_spawn(p.io, send_then_fin(*st, std::string(100000, 'r'), sent), asio::detached);
  REQUIRE(p.run_until([&] { return sent && p.streams.size() == 1; }));
  p.run_until([&] { return false; }, 50ms);  // the FIN arrives; nobody reads yet
  st->close();                               // not ended cleanly: RESET
  p.run_until([&] { return false; }, 50ms);
  std::error_code ec;
  std::size_t got = 0;
  bool done = false;
  asio::co_spawn(p.io, read_result(*p.streams.front(), ec, got, done), asio::detached);
  REQUIRE(p.run_until([&] { return done; }));
  CHECK(ec == mux::errc::reset_by_peer);  // (before: eof, after 0 bytes: a truncated request ended "cleanly")
  CHECK(got == 0);
}

TEST_CASE("a stream's receive buffer stays within one and a half windows while its relay reads a little at a time") {
  session_pair p;
  auto st = p.client->open("syslog", "127.0.0.1:4023");
  REQUIRE(st);
  bool written = false;
  const std::size_t total = 4 * mux::initial_stream_window;
  asio::co_spawn(p.io, write(*st, std::string(total, 'w'), written), asio::detached);
  REQUIRE(p.run_until([&] { return p.streams.size() == 1; }));
  mux::stream& in = *p.streams.front();
  std::size_t got = 0, largest = 0;
  while (got < total) {
    // A little at a time: the taken prefix stays under half of the buffer while the peer,
    // given back credit, sends more.
    const std::size_t want = std::min(got + 20 * 1024, total);
    asio::co_spawn(p.io, read_exactly(in, want, got), asio::detached);
    REQUIRE(p.run_until([&] { return got == want; }));
    p.run_until([&] { return false; }, 5ms);
    largest = std::max(largest, in.receive_buffer_capacity());
  }
  CHECK(written);
  // (Its window may have grown meanwhile: the bound is from the largest window granted.)
  CHECK(largest <= p.server->stats().receive_window * 3 / 2);  // (before: up to twice the window)
  st->close();
  p.run_until([&] { return false; }, 50ms);
}

TEST_CASE("DATA after the peer's FIN on a stream is a protocol error") {
  session_pair p({}, {}, false, session_pair::raw_side::client);
  std::vector<std::byte> frames;
  mux::encode_open(frames, 1, "syslog", "127.0.0.1:4051");
  mux::encode_data(frames, 1, bytes("before"));
  mux::encode_fin(frames, 1);
  mux::encode_data(frames, 1, bytes("after the end"));
  bool sent = false;
  asio::co_spawn(p.io, send_raw(*p.client_tls, frames, sent), asio::detached);
  REQUIRE(p.run_until([&] { return !p.server->failure().empty(); }));
  CHECK(p.server->failure().find("DATA after FIN on stream 1") != std::string::npos);
}

TEST_CASE("a repeated GOAWAY changes nothing; one that takes back streams fails those") {
  session_pair p({}, {}, false, session_pair::raw_side::server);
  std::vector<std::unique_ptr<mux::stream>> open;
  for (int i = 0; i < 4; ++i) open.push_back(p.client->open("syslog", "127.0.0.1:4052"));
  std::vector<std::byte> frames;
  for (int i = 0; i < 1000; ++i) mux::encode_goaway(frames, 3, mux::reset_code::shutdown, "going");
  bool sent = false;
  asio::co_spawn(p.io, send_raw(*p.server_tls, frames, sent), asio::detached);
  REQUIRE(p.run_until([&] { return sent && p.client->stream_count() == 3; }));
  p.run_until([&] { return false; }, 50ms);
  CHECK(p.client->stream_count() == 3);  // streams 1-3 stay: the server saw them
  CHECK(p.client->failure().empty());
  std::vector<std::byte> lower;
  mux::encode_goaway(lower, 1, mux::reset_code::shutdown, "going sooner");
  bool sent_lower = false;
  asio::co_spawn(p.io, send_raw(*p.server_tls, lower, sent_lower), asio::detached);
  CHECK(p.run_until([&] { return p.client->stream_count() == 1; }));
}

namespace {

// Closes `streams` and lets their writers finish before the streams go (declare it after
// them): a writer still suspended on a stream must not outlive it, even when a REQUIRE ends
// the test early.
struct close_streams {
  session_pair& p;
  std::vector<std::unique_ptr<mux::stream>>& streams;
  ~close_streams() {
    for (auto& st : streams)
      if (st) st->close();
    p.run_until([] { return false; }, 50ms);
  }
};

// A client session whose peer is raw (the test speaks for it) and reads every frame into
// `seen`, with `N` client streams started by start(). Members in this order: the writers
// and the reader use `done` and `seen` until the pair ends, and the streams are closed (and
// their writers finished) before they go.
template <std::size_t N>
struct writers_to_a_raw_peer {
  std::array<bool, N> done{};
  std::vector<seen_frame> seen;
  session_pair p{{}, {}, false, session_pair::raw_side::server};
  std::vector<std::unique_ptr<mux::stream>> streams;
  close_streams closer{p, streams};

  writers_to_a_raw_peer() { asio::co_spawn(p.io, collect_frames(*p.server_tls, seen), asio::detached); }
  // Stream `i` writes `size` bytes; done[i] once written.
  mux::stream& start(std::size_t i, std::size_t size) {
    streams.push_back(p.client->open("syslog", "127.0.0.1:4053"));
    REQUIRE(streams.back());
    asio::co_spawn(p.io, write(*streams.back(), std::string(size, 'x'), done[i]), asio::detached);
    return *streams.back();
  }
};

}  // namespace

TEST_CASE("connection credit granted a few bytes at a time wakes one waiting stream per grant, and none is stranded") {
  writers_to_a_raw_peer<116> w;
  auto& p = w.p;
  auto& done = w.done;
  const auto start = [&](std::size_t i, std::size_t size) { w.start(i, size); };
  // Sixteen streams use up the connection's 4 MiB of credit; a hundred more then wait for it.
  for (std::size_t i = 0; i < 16; ++i) start(i, mux::initial_stream_window);
  REQUIRE(p.run_until([&] { return std::all_of(done.begin(), done.begin() + 16, [](bool d) { return d; }); }));
  REQUIRE(p.client->connection_credit() == 0);
  for (std::size_t i = 16; i < done.size(); ++i) start(i, 100);
  p.run_until([&] { return false; }, 50ms);
  const auto before = p.client->stats().room_wakeups;
  std::vector<std::byte> grants;
  for (int i = 0; i < 50; ++i) mux::encode_window(grants, 0, 1);
  bool sent = false;
  asio::co_spawn(p.io, send_raw(*p.server_tls, grants, sent), asio::detached);
  REQUIRE(p.run_until([&] { return sent; }));
  p.run_until([&] { return false; }, 100ms);
  // At most one stream per grant; waking all who wait would be 100 per grant.
  CHECK(p.client->stats().room_wakeups - before <= 50);
  CHECK(p.client->connection_credit() == 0);
  // Then enough credit for all: every waiting stream is woken at once and their bytes leave
  // together, in a record or two (not one writer pass, one record, per stream).
  const auto records_before = p.client->stats().records_sent;
  std::vector<std::byte> enough;
  mux::encode_window(enough, 0, 100 * 100);
  bool sent_enough = false;
  asio::co_spawn(p.io, send_raw(*p.server_tls, enough, sent_enough), asio::detached);
  CHECK(p.run_until([&] { return std::all_of(done.begin(), done.end(), [](bool d) { return d; }); }));
  CHECK(p.client->stats().records_sent - records_before <= 5);
  CHECK(p.client->failure().empty());
}

TEST_CASE("streams sending at once share the connection: none waits for another to finish") {
  std::array<bool, 4> written{};
  std::array<std::size_t, 4> got{};
  session_pair p;
  std::vector<std::unique_ptr<mux::stream>> senders;
  const close_streams closer{p, senders};
  constexpr std::size_t each = 8 * 1024 * 1024;  // more than the connection window
  for (std::size_t i = 0; i < written.size(); ++i) {
    senders.push_back(p.client->open("syslog", "127.0.0.1:4054"));
    asio::co_spawn(p.io, write(*senders.back(), std::string(each, static_cast<char>('a' + i)), written[i]), asio::detached);
  }
  REQUIRE(p.run_until([&] { return p.streams.size() == written.size(); }));
  for (std::size_t i = 0; i < written.size(); ++i)
    asio::co_spawn(p.io, read_up_to(*p.streams[i], each, got[i]), asio::detached);
  REQUIRE(p.run_until([&] { return std::any_of(written.begin(), written.end(), [](bool w) { return w; }); }));
  // When the first sender is done, every other has had a fair part of the passes.
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] >= each / 4);
  }
  REQUIRE(p.run_until([&] { return std::all_of(got.begin(), got.end(), [&](std::size_t g) { return g == each; }); }));
}

TEST_CASE("a listed stream that used up its own window meanwhile does not take the credit another needs") {
  // C and A wait for connection credit, A behind C and B behind A. A grant comes with a
  // WINDOW of A's own: C is woken for the grant, A by its own WINDOW, and both send until
  // their own windows are spent, A staying listed. What is left of the grant must then go
  // to B, not to A, which can no longer use it (before: A was woken for it, could not
  // send, and B waited for a writer pass that never came).
  writers_to_a_raw_peer<20> w;
  auto& p = w.p;
  auto& done = w.done;
  auto& seen = w.seen;
  const auto start = [&](std::size_t i, std::size_t size) -> mux::stream& { return w.start(i, size); };
  const auto finished = [&](std::size_t i) { return p.run_until([&] { return done[i]; }); };
  // C keeps 10 bytes of its window, A 5; fillers take the rest of the connection's 4 MiB.
  mux::stream& c = start(0, mux::initial_stream_window - 10);
  REQUIRE(finished(0));
  mux::stream& a = start(1, mux::initial_stream_window - 5);
  REQUIRE(finished(1));
  for (std::size_t i = 2; i < 16; ++i) start(i, mux::initial_stream_window);
  start(16, 15);
  REQUIRE(p.run_until([&] { return std::all_of(done.begin(), done.begin() + 17, [](bool d) { return d; }); }));
  REQUIRE(p.client->connection_credit() == 0);
  // Now C, then A, then B wait for connection credit.
  asio::co_spawn(p.io, write(c, std::string(1000, 'c'), done[17]), asio::detached);
  p.run_until([] { return false; }, 20ms);
  asio::co_spawn(p.io, write(a, std::string(1000, 'a'), done[18]), asio::detached);
  p.run_until([] { return false; }, 20ms);
  mux::stream& b = start(19, 100);
  p.run_until([] { return false; }, 20ms);
  const auto data_for = [&](const mux::stream& s) {
    return std::count_if(seen.begin(), seen.end(),
                         [&](const seen_frame& f) { return f.type == mux::frame_type::data && f.stream == s.id(); });
  };
  const auto b_before = data_for(b);
  // One batch: 100 bytes of connection credit, and 5 more of A's own window.
  std::vector<std::byte> grants;
  mux::encode_window(grants, 0, 100);
  mux::encode_window(grants, a.id(), 5);
  bool sent = false;
  asio::co_spawn(p.io, send_raw(*p.server_tls, grants, sent), asio::detached);
  // C sends its 10, A its 10: 80 bytes of credit are left for B.
  CHECK(p.run_until([&] { return data_for(b) > b_before; }, 2s));
  CHECK(p.client->failure().empty());
}
