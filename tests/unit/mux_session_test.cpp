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
  explicit session_pair(mux::session_settings client_settings = {}, mux::session_settings server_settings = {},
                        bool wait_ready = true) {
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
    client = std::make_unique<mux::session>(*client_tls, client_settings);
    server = std::make_unique<mux::session>(*server_tls, server_settings);
    server->on_accept_flow([this](std::unique_ptr<mux::flow> f) {
      mux::flow& fl = *f;
      accepted.push_back(std::move(f));
      fl.on_receive([this](std::span<const std::byte> d) { server_got.push_back(text(d)); });
      if (on_flow) on_flow(fl);
    });
    server->on_accept([this](std::unique_ptr<mux::stream> st) { streams.push_back(std::move(st)); });
    asio::co_spawn(io, run(*client, client_done), asio::detached);
    asio::co_spawn(io, run(*server, server_done), asio::detached);
    if (wait_ready) REQUIRE(run_until([&] { return client->ready(); }));
  }

  ~session_pair() {
    // End both sessions before their objects go: their coroutines refer to them.
    client_tls->close();
    server_tls->close();
    run_until([&] { return client_done && server_done; });
    accepted.clear();
    streams.clear();
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
  std::vector<std::unique_ptr<mux::stream>> stalled;
  std::array<bool, 14> sent{};
  for (std::size_t i = 0; i < sent.size(); ++i) {
    stalled.push_back(p.client->open("syslog", "127.0.0.1:4011"));
    REQUIRE(stalled.back());
    asio::co_spawn(p.io, write(*stalled.back(), std::string(mux::initial_stream_window, 's'), sent[i]), asio::detached);
  }
  REQUIRE(p.run_until([&] { return std::all_of(sent.begin(), sent.end(), [](bool w) { return w; }); }));
  REQUIRE(p.run_until([&] { return p.streams.size() == sent.size(); }));
  auto active = p.client->open("syslog", "127.0.0.1:4012");
  REQUIRE(active);
  constexpr std::size_t total = 2 * 1024 * 1024;
  bool written = false;
  asio::co_spawn(p.io, write(*active, std::string(total, 'a'), written), asio::detached);
  REQUIRE(p.run_until([&] { return p.streams.size() == sent.size() + 1; }));
  std::size_t got = 0;
  asio::co_spawn(p.io, read_up_to(*p.streams.back(), total, got), asio::detached);
  CHECK(p.run_until([&] { return written && got == total; }));
  CHECK(p.client->failure().empty());
  CHECK(p.server->failure().empty());
  active->close();
  p.run_until([&] { return false; }, 50ms);
}
