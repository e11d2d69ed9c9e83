// Sanitizer harness for the offload core: random and mutated super-packets through Split and
// random segment batches through Coalesce, every buffer allocated at exactly the size handed
// over so AddressSanitizer catches any access past it, UBSan any overflow or misaligned load.
//
//   g++ -std=c++17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all
//       -I native native/test/offload_fuzz.cc native/offload.cc -o /tmp/offload_fuzz
//   /tmp/offload_fuzz [iterations] [seed]
//
// Exits 0 when every iteration kept the core's promises, 1 (with a message) when one did not;
// a sanitizer finding aborts with its own report.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <memory>
#include <vector>

#include "offload.h"

namespace {

uint64_t rng_state = 88172645463325252ull;
uint64_t Next() {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }

void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

[[noreturn]] void Fail(const char* what, uint64_t iter) {
  fprintf(stderr, "offload_fuzz: iteration %llu: %s\n", static_cast<unsigned long long>(iter), what);
  exit(1);
}

// An IPv4 or IPv6 TCP/UDP packet with plausible headers (checksums not necessarily valid: the
// core must cope either way).
std::vector<uint8_t> Packet(bool v6, bool udp, size_t payload, size_t ip_opt, size_t tcp_opt) {
  const size_t l3 = v6 ? 40 : 20 + ip_opt;
  const size_t l4 = udp ? 8 : 20 + tcp_opt;
  std::vector<uint8_t> p(l3 + l4 + payload);
  for (size_t i = 0; i < p.size(); i++) p[i] = static_cast<uint8_t>(Next());
  if (v6) {
    p[0] = 0x60;
    Put16(&p[4], static_cast<uint16_t>(l4 + payload));
    p[6] = udp ? 17 : 6;
  } else {
    p[0] = static_cast<uint8_t>(0x40 | (l3 / 4));
    Put16(&p[2], static_cast<uint16_t>(p.size()));
    Put16(&p[6], 0x4000);
    p[9] = udp ? 17 : 6;
  }
  if (udp) {
    Put16(&p[l3 + 4], static_cast<uint16_t>(l4 + payload));
  } else {
    p[l3 + 12] = static_cast<uint8_t>((l4 / 4) << 4);
    p[l3 + 13] = static_cast<uint8_t>(0x10 | (Next() & 0x09));
  }
  return p;
}

void FuzzSplit(uint64_t iter) {
  const bool v6 = Next() & 1, udp = (Next() % 3) == 0;
  const size_t payload = Below(Next() & 1 ? 9000 : 300);
  std::vector<uint8_t> pkt = Packet(v6, udp, payload, (Next() & 3) == 0 ? 4 * Below(11) : 0,
                                    udp ? 0 : 4 * Below(11));
  if (pkt.size() > 65535) pkt.resize(65535);
  std::vector<uint8_t> src(weft::kVnetHdrLen + pkt.size());
  if (!pkt.empty()) memcpy(src.data() + weft::kVnetHdrLen, pkt.data(), pkt.size());
  weft::VnetHdr h;
  const size_t l3 = v6 ? 40 : (pkt[0] & 15) * 4;
  h.flags = weft::kVnetFlagNeedsCsum;
  h.gso_type = Next() % 4 == 0 ? weft::kGsoNone
               : udp           ? weft::kGsoUdpL4
               : v6            ? weft::kGsoTcpV6
                               : weft::kGsoTcpV4;
  h.csum_start = static_cast<uint16_t>(l3);
  h.csum_offset = udp ? 6 : 16;
  h.gso_size = h.gso_type == weft::kGsoNone ? 0 : static_cast<uint16_t>(1 + Below(1500));
  weft::EncodeVnetHdr(h, src.data());
  // Mutate: header bytes, packet header bytes, or the length.
  for (size_t m = Below(4); m > 0; m--) {
    size_t at = Below(std::min<size_t>(src.size(), 140));
    src[at] ^= static_cast<uint8_t>(1 + Below(255));
  }
  if (Next() % 8 == 0) src.resize(Below(src.size() + 1));
  if (Next() % 16 == 0) {
    src.resize(Below(200));
    for (auto& b : src) b = static_cast<uint8_t>(Next());
  }

  const size_t slot = 1 + Below(Next() & 1 ? 2100 : 200);
  const size_t head = Below(std::min<size_t>(slot, 100));
  const size_t max = Below(10);
  // Exact sizes: ASan flags any byte past them. A zero-length slab still needs a pointer.
  std::unique_ptr<uint8_t[]> slab(new uint8_t[slot * max + 1]);
  std::unique_ptr<int32_t[]> offs(new int32_t[max + 1]), lens(new int32_t[max + 1]);
  std::unique_ptr<uint8_t[]> srcbuf(new uint8_t[src.size() + 1]);
  if (!src.empty()) memcpy(srcbuf.get(), src.data(), src.size());
  weft::Slab s{slab.get(), slot * max, slot, head, max, offs.get(), lens.get()};
  double ctr[weft::kCtrCount] = {};
  uint32_t next = 0;
  // Half the time through SplitPacket with a prefix, as tunnel super-datagrams are cut: the
  // header decoded here, the packet behind it, a prefix of up to 64 bytes repeated per output.
  const bool with_prefix = src.size() > weft::kVnetHdrLen && (Next() & 1);
  const size_t prefix_len = with_prefix ? Below(65) : 0;
  std::unique_ptr<uint8_t[]> prefix(new uint8_t[prefix_len + 1]);
  for (size_t i = 0; i < prefix_len; i++) prefix[i] = static_cast<uint8_t>(Next());
  weft::VnetHdr decoded;
  if (with_prefix) weft::DecodeVnetHdr(srcbuf.get(), &decoded);
  for (int call = 0; call < 70000; call++) {
    weft::SplitResult r =
        with_prefix ? weft::SplitPacket(decoded, srcbuf.get() + weft::kVnetHdrLen,
                                        src.size() - weft::kVnetHdrLen, next, &s, 0, prefix.get(),
                                        prefix_len, ctr)
                    : weft::Split(srcbuf.get(), src.size(), next, &s, 0, ctr);
    if (r.produced > max) Fail("produced more than the slots", iter);
    for (size_t i = 0; i < r.produced; i++) {
      if (offs[i] != static_cast<int32_t>(i * slot + head)) Fail("slot offset", iter);
      if (lens[i] != -1 && (lens[i] <= 0 || static_cast<size_t>(lens[i]) > slot - head))
        Fail("slot length", iter);
      if (lens[i] > 0 && prefix_len && memcmp(slab.get() + offs[i], prefix.get(), prefix_len) != 0)
        Fail("prefix not repeated", iter);
    }
    if (r.refuse != weft::kRefuseNone && r.produced) Fail("refused and produced", iter);
    if (!r.more || max == 0) break;
    next = r.next;
  }
  if (!src.empty() && memcmp(srcbuf.get(), src.data(), src.size()) != 0)
    Fail("source modified", iter);
}

void FuzzCoalesce(uint64_t iter) {
  const size_t count = 1 + Below(48);
  std::vector<std::vector<uint8_t>> pkts;
  uint32_t seq[3] = {1, 5000001, 9000001};
  for (size_t i = 0; i < count; i++) {
    const size_t kind = Below(10);
    std::vector<uint8_t> p;
    if (kind == 0) {
      p.resize(Below(80));
      for (auto& b : p) b = static_cast<uint8_t>(Next());
    } else {
      const size_t flow = Below(3);
      const size_t payload = Next() & 1 ? 1000 : Below(1461);
      p = Packet(false, kind == 1, payload, 0, Next() % 4 == 0 ? 12 : 0);
      memset(&p[12], 10, 8);
      if (kind != 1) {
        Put16(&p[20], static_cast<uint16_t>(1000 + flow));
        p[24] = static_cast<uint8_t>(seq[flow] >> 24);
        p[25] = static_cast<uint8_t>(seq[flow] >> 16);
        p[26] = static_cast<uint8_t>(seq[flow] >> 8);
        p[27] = static_cast<uint8_t>(seq[flow]);
        memset(&p[28], 0, 4);
        p[1] = 0;
        p[8] = 64;
        seq[flow] += static_cast<uint32_t>(payload);
      }
      // Valid IP header checksum, and a valid, seed-only or random L4 checksum.
      Put16(&p[10], 0);
      Put16(&p[10], static_cast<uint16_t>(~weft::Fold(weft::SumBytes(p.data(), 20, 0))));
      const size_t off = kind == 1 ? 26 : 36;
      Put16(&p[off], 0);
      uint64_t ps = weft::PseudoSum(&p[12], &p[16], 4, p[9], static_cast<uint32_t>(p.size() - 20));
      switch (Below(3)) {
        case 0: Put16(&p[off], static_cast<uint16_t>(~weft::Fold(weft::SumBytes(&p[20], p.size() - 20, ps)))); break;
        case 1: Put16(&p[off], weft::Fold(ps)); break;
        default: break;
      }
      if (Next() % 6 == 0) p[Below(p.size())] ^= static_cast<uint8_t>(1 + Below(255));
    }
    pkts.push_back(std::move(p));
  }
  size_t total = 0;
  for (auto& p : pkts) total += p.size();
  std::unique_ptr<uint8_t[]> buf(new uint8_t[total + 1]);
  std::vector<int32_t> offs(count), lens(count);
  size_t pos = 0;
  for (size_t i = 0; i < count; i++) {
    if (!pkts[i].empty()) memcpy(buf.get() + pos, pkts[i].data(), pkts[i].size());
    offs[i] = static_cast<int32_t>(pos);
    lens[i] = Next() % 20 == 0 ? 0 : static_cast<int32_t>(pkts[i].size());
    pos += pkts[i].size();
  }
  std::unique_ptr<uint32_t[]> head(new uint32_t[count]), tail(new uint32_t[count]),
      cnt(new uint32_t[count]), nxt(new uint32_t[count]);
  std::unique_ptr<uint16_t[]> po(new uint16_t[count]);
  std::unique_ptr<weft::VnetHdr[]> hdr(new weft::VnetHdr[count]);
  weft::CoalescePlan plan;
  plan.cap = count;
  plan.head = head.get();
  plan.tail = tail.get();
  plan.count = cnt.get();
  plan.next = nxt.get();
  plan.payload_off = po.get();
  plan.hdr = hdr.get();
  double ctr[weft::kCtrCount] = {};
  weft::Coalesce(buf.get(), offs.data(), lens.data(), count, Next() & 1, &plan, ctr);
  size_t seen = 0, live = 0;
  for (size_t i = 0; i < count; i++) live += lens[i] > 0;
  for (size_t u = 0; u < plan.units; u++) {
    size_t n = 0, bytes = 0;
    for (uint32_t m = plan.head[u]; m != weft::kEnd; m = plan.next[m]) {
      if (m >= count || lens[m] <= 0) Fail("unit member outside the batch", iter);
      if (++n > weft::kMaxMergeSegments) Fail("unit too long", iter);
      bytes += n == 1 ? static_cast<size_t>(lens[m]) : static_cast<size_t>(lens[m]) - plan.payload_off[u];
    }
    if (n != plan.count[u]) Fail("unit count", iter);
    if (n > 1 && bytes > 65535) Fail("super-packet over 64 KiB", iter);
    seen += n;
  }
  if (seen != live) Fail("packets lost or duplicated", iter);
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t iterations = argc > 1 ? strtoull(argv[1], nullptr, 10) : 100000;
  if (argc > 2) rng_state = strtoull(argv[2], nullptr, 10) | 1;
  for (uint64_t i = 0; i < iterations; i++) {
    FuzzSplit(i);
    FuzzCoalesce(i);
  }
  printf("offload_fuzz: %llu iterations passed\n", static_cast<unsigned long long>(iterations));
  return 0;
}
